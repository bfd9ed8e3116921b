"""Target sparsity: the Lagrangian λ₁(ŝ − t) + λ₂(ŝ − t)², multipliers trained by ascent."""

import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import MaskConfig, check_dam_config
from sparsebert_cli.masks.dam import DAM, SparsityTarget
from sparsebert_cli.masks.stats import sparsity
from sparsebert_cli.training.dam import add_dam_hooks
from sparsebert_cli.training.loop import Hooks
from sparsebert_cli.training.optim import GroupRates, build_optimizer
from sparsebert_cli.validation import validate_config


def test_expected_sparsity_is_one_minus_mean_keep_probability():
    dam = DAM(heads=2, n=4, init=1.0)
    assert dam.expected_sparsity().item() == pytest.approx(1 - torch.sigmoid(torch.tensor(1.0)))


def test_target_warms_up_linearly_from_zero():
    target = SparsityTarget(0.8, warmup=10)
    assert [target.target_at(s) for s in (0, 5, 10, 20)] == pytest.approx([0, 0.4, 0.8, 0.8])
    assert SparsityTarget(0.8).target_at(0) == 0.8


def test_lagrangian_value_and_ascent_gradients_of_the_multipliers():
    target = SparsityTarget(0.9)
    with torch.no_grad():
        target.multipliers.copy_(torch.tensor([-2.0, 3.0]))
    expected = torch.tensor(0.5, requires_grad=True)
    value = target(expected, 0.6, 0.9)  # value at the binarized sparsity 0.6, gradient of ŝ
    value.backward()
    gap = 0.6 - 0.9
    assert value.item() == pytest.approx(-2.0 * gap + 3.0 * gap**2)
    assert target.multipliers.grad.tolist() == pytest.approx([-gap, -(gap**2)])  # negated
    assert expected.grad.item() == pytest.approx(-2.0 + 2 * 3.0 * gap)


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
@pytest.mark.parametrize("structure", ["unstructured", "structured", "block"])
def test_controller_moves_the_sparsity_toward_the_target(optimizer, structure):
    """α against a loss that rewards keeping entries: only the multipliers push s up to t. The
    task wants some entries more than others: under a uniform pull every α stays equal and the
    sign sparsity can only flip between 0 and 100 %, which averaged to 80 % by chance."""
    fields = {"structure": structure, "seq_len": 16, "lam": 0.0, "target_warmup": 100}
    cfg = OmegaConf.structured(MaskConfig(name="dam", target_sparsity=0.8, **fields))
    model = torch.nn.Module()
    model.dam = DAM.from_config(cfg, heads=2, layers=1, block_size=4)
    trainer = OmegaConf.create(
        {"weight_decay": 0.01, "optimizer": optimizer, "lr": 1e-3, "betas": [0.9, 0.999]}
    )
    opt = build_optimizer(model, trainer, GroupRates(alpha=0.05, multipliers=1e-4))
    hooks = add_dam_hooks(Hooks(), cfg, model.dam, total_steps=300)
    alpha = model.dam.alpha
    per_alpha = model.dam.entries() / alpha.numel()
    want = torch.linspace(0.5, 1.5, alpha.numel()).reshape(alpha.shape) * per_alpha
    seen = []
    for step in range(300):
        hooks.before_step(step)
        penalty, logged = hooks.penalty()
        keep_reward = -1e-3 * (want * torch.sigmoid(alpha)).sum()  # a task that wants attention
        (keep_reward + penalty).backward()
        opt.step()
        opt.zero_grad()
        seen.append(model.dam.sign_sparsity())
    assert seen[0] == 0  # α > 0 everywhere after the first step (the task's pull)
    assert all(abs(s - 80) < 3 for s in seen[-10:]), seen[-10:]  # there, and it stays
    assert logged["mask/target_sparsity"] == pytest.approx(80)


def test_the_dam_stands_aside_during_a_head_warm_up_and_its_schedules_start_after_it():
    """Warm-up steps: no penalty (the multipliers climbed on the gap of the untrained mask, α's
    moments filled with penalty-only gradients); τ and the target counted from the warm-up's end."""
    fields = {"structure": "structured", "seq_len": 16, "lam": 0.0, "target_warmup": 10}
    cfg = OmegaConf.structured(
        MaskConfig(name="dam", target_sparsity=0.8, tau=1.0, tau_final=0.5, **fields)
    )
    model = torch.nn.Module()
    model.dam = DAM.from_config(cfg, heads=2, layers=1)
    trainer = OmegaConf.create(
        {"weight_decay": 0.01, "optimizer": "adamw", "lr": 1e-3, "betas": [0.9, 0.999]}
    )
    opt = build_optimizer(model, trainer, GroupRates(alpha=0.05, multipliers=1e-2))
    hooks = add_dam_hooks(Hooks(), cfg, model.dam, total_steps=25, start=5)
    alpha = model.dam.alpha.detach().clone()
    for step in range(5):
        hooks.before_step(step)
        penalty, logged = hooks.penalty()
        assert penalty.item() == 0 and not penalty.requires_grad
        assert logged["mask/sign_sparsity"] == 100  # α = 0: the mask is still measured
        opt.step()
    assert model.dam.target.multipliers.tolist() == [0, 0]
    assert torch.equal(model.dam.alpha, alpha) and not opt.state  # no moments either
    taus, targets = [], []
    for step in (5, 10, 15, 25):
        hooks.before_step(step)
        taus.append(model.dam.tau)
        targets.append(hooks.penalty()[1]["mask/target_sparsity"])
    assert taus == pytest.approx([1.0, 0.875, 0.75, 0.5])
    assert targets == pytest.approx([0, 40, 80, 80])
    assert hooks.penalty()[0].requires_grad


def test_l1_path_is_unchanged_without_a_target():
    cfg = OmegaConf.structured(MaskConfig(name="dam", seq_len=4, lam=1e-3))
    dam = DAM.from_config(cfg, heads=2, layers=1)
    penalty, logged = add_dam_hooks(Hooks(), cfg, dam, total_steps=1).penalty()
    assert dam.target is None and penalty.item() == pytest.approx(1e-3 * 2 * 16 * 0.5)
    assert set(logged) == {"mask/l1"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"target_sparsity": 0.9}, "mask.target_sparsity=0.9 and mask.lam=0.0001 are both set"),
        ({"keep_diagonal_blocks": True}, "needs mask.structure=block"),
    ],
)
def test_conflicting_dam_settings_are_refused(fields, message):
    with pytest.raises(SparseBertError, match=message):
        check_dam_config(MaskConfig(name="dam", **fields))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mask.target_sparsity=1.0", r"mask.target_sparsity=1.0 must be in \[0, 1\)"),
        ("mask.target_warmup=-1", "mask.target_warmup=-1 must be ≥ 0"),
        ("mask.lagrangian_lr=0", "mask.lagrangian_lr=0.0 must be > 0"),
    ],
)
def test_the_targets_settings_out_of_range_are_refused(override, message):
    cfg = compose_cfg("search", "mask.lam=0", "mask.target_sparsity=0.5", override)
    with pytest.raises(SparseBertError, match=message):
        validate_config(cfg)


def test_a_target_with_lam_zero_is_accepted():
    check_dam_config(MaskConfig(name="dam", lam=0.0, target_sparsity=0.9))


def test_a_dam_without_target_or_blocks_hashes_without_the_new_keys():
    from dataclasses import asdict

    from sparsebert_cli.masks.config import mask_identity

    plain = asdict(MaskConfig(name="dam"))
    assert "target_sparsity" not in mask_identity(plain)
    assert "keep_diagonal_blocks" not in mask_identity(plain)
    steered = mask_identity({**plain, "structure": "block", "target_sparsity": 0.9, "lam": 0.0})
    assert steered["target_sparsity"] == 0.9 and "keep_diagonal_blocks" in steered


def test_a_pattern_field_added_later_leaves_the_dam_hashes_as_they_were(monkeypatch):
    """docs/extending.md's new pattern field (`dilation`) changed every DAM run's hash: a rerun
    of a finished DAM sweep was refused as "a different config" (found by a README review)."""
    from dataclasses import asdict

    from sparsebert_cli.masks import config

    plain = asdict(MaskConfig(name="dam"))
    before = config.mask_identity(plain)
    monkeypatch.setattr(config, "PATTERN_ONLY", (*config.PATTERN_ONLY, "dilation"))
    assert config.mask_identity({**plain, "dilation": 1}) == before
    assert before["window"] == plain["window"]  # the fields hashed from the start stay


@pytest.mark.parametrize(
    ("structure", "granularity"),
    [("unstructured", 1 / (2 * 16 * 16)), ("structured", 2 * 15 / (16 * 16)), ("block", 1 / 16)],
)
def test_the_final_mask_meets_the_target_to_the_structures_granularity(structure, granularity):
    """Whatever the controller reached (here: random α), the mask handed on has the target's
    sparsity, up to the largest group of entries that share one α."""
    cfg = OmegaConf.structured(
        MaskConfig(name="dam", structure=structure, seq_len=16, lam=0.0, target_sparsity=0.8)
    )
    dam = DAM.from_config(cfg, heads=2, layers=1, block_size=4)
    with torch.no_grad():
        dam.alpha.normal_(generator=torch.Generator().manual_seed(0))
    final = dam.binarize()
    assert abs(sparsity(final) - 80) <= 100 * granularity / 2 + 1e-9
    assert abs(dam.sign_sparsity() - 50) < 20  # the sign mask: about half of N(0, 1)
    if structure == "structured":  # a distance is kept or dropped whole
        kept = final[0, 0]
        assert all(kept.diagonal(d).all() or not kept.diagonal(d).any() for d in range(16))


def test_kept_diagonal_blocks_survive_the_target_threshold():
    cfg = OmegaConf.structured(MaskConfig(name="dam", structure="block", seq_len=16, lam=0.0,
                                          target_sparsity=0.95, keep_diagonal_blocks=True))  # fmt: skip
    dam = DAM.from_config(cfg, heads=1, layers=1, block_size=4)
    with torch.no_grad():
        dam.alpha.fill_(5.0)  # every tile's α above the kept tiles' placeholder value 1
    final = dam.binarize()[0, 0]
    assert all(final[i * 4 : i * 4 + 4, i * 4 : i * 4 + 4].all() for i in range(4))


def test_the_target_threshold_follows_alpha_changed_behind_its_version():
    """α written through .data (or by a fused optimiser) keeps its version: the threshold found
    for the old α is dropped when the mode changes (train → eval), so eval binarizes the new α."""
    dam = DAM(1, 8, structure="structured", target=SparsityTarget(0.5))
    with torch.no_grad():
        dam.alpha.copy_(torch.arange(8.0))  # the largest α: the far distances
    dam.train()
    far = dam.binarize()[0, 0, 0]
    dam.alpha.data.copy_(-torch.arange(8.0))  # now the near distances are the largest
    dam.eval()
    near = dam.binarize()[0, 0, 0]
    assert bool(far[-1]) and not bool(far[0])
    assert bool(near[0]) and not bool(near[-1])
