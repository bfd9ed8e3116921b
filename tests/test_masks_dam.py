"""DAM: shapes, Gumbel-sigmoid sampling with straight-through gradients, Toeplitz structure, L1."""

import warnings

import pytest
import torch

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import MaskConfig, check_dam_u_size
from sparsebert_cli.masks.dam import DAM, annealed_tau


def toeplitz(values: torch.Tensor) -> torch.Tensor:
    """[L, H, n] per-distance values → [L, H, n, n] with entry (i, j) = values[|i − j|]."""
    n = values.shape[-1]
    out = torch.empty(*values.shape[:-1], n, n, dtype=values.dtype)
    for i in range(n):
        for j in range(n):
            out[..., i, j] = values[..., abs(i - j)]
    return out


def test_unstructured_alpha_is_one_per_layer_head_query_key():
    assert DAM(heads=3, n=5, layers=2).alpha.shape == (2, 3, 5, 5)


def test_structured_alpha_is_one_per_layer_head_distance():
    assert DAM(heads=3, n=5, layers=2, structure="structured").alpha.shape == (2, 3, 5)


def test_from_config_shares_one_mask_across_layers_by_default():
    dam = DAM.from_config(MaskConfig(name="dam", seq_len=6), heads=2, layers=4)
    assert dam.alpha.shape == (1, 2, 6, 6)


def test_from_config_gives_each_layer_its_mask_when_not_shared():
    cfg = MaskConfig(name="dam", seq_len=6, share_layers=False, structure="structured")
    assert DAM.from_config(cfg, heads=2, layers=4).alpha.shape == (4, 2, 6)


def test_state_dict_holds_only_alpha():
    assert list(DAM(heads=1, n=4, structure="structured").state_dict()) == ["alpha"]


def test_probs_are_sigmoid_of_alpha():
    dam = DAM(heads=2, n=4)
    with torch.no_grad():
        dam.alpha.copy_(torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(dam.probs(), torch.sigmoid(dam.alpha))


def test_hard_sample_is_exactly_zero_or_one():
    torch.manual_seed(0)
    sample = DAM(heads=2, n=8).sample()
    assert sample.shape == (1, 2, 8, 8)
    assert ((sample == 0) | (sample == 1)).all()
    assert 0 < sample.sum() < sample.numel()


def test_soft_sample_lies_strictly_between_zero_and_one():
    torch.manual_seed(0)
    sample = DAM(heads=2, n=8, hard=False).sample()
    assert ((sample > 0) & (sample < 1)).all()


def test_hard_sample_is_the_rounded_soft_sample_of_the_same_noise():
    torch.manual_seed(3)
    soft = DAM(heads=2, n=8, hard=False).sample()
    torch.manual_seed(3)
    hard = DAM(heads=2, n=8, hard=True).sample()
    assert torch.equal(hard, (soft > 0.5).float())


def test_sample_draws_from_the_global_torch_rng():
    dam = DAM(heads=2, n=8)
    torch.manual_seed(1)
    first = dam.sample()
    torch.manual_seed(1)
    assert torch.equal(dam.sample(), first)
    torch.manual_seed(2)
    assert not torch.equal(dam.sample(), first)


def test_straight_through_gradient_reaches_alpha_as_the_soft_gradient():
    weights = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    grads = []
    for hard in (True, False):
        dam = DAM(heads=2, n=6, hard=hard, init=0.3)
        torch.manual_seed(4)
        (dam.sample() * weights).sum().backward()
        grads.append(dam.alpha.grad)
    assert torch.equal(grads[0], grads[1])
    assert (grads[0] != 0).all()


def test_lower_tau_makes_the_soft_sample_sharper():
    dam = DAM(heads=4, n=16, hard=False)
    torch.manual_seed(0)
    warm = dam.sample()
    dam.tau = 0.1
    torch.manual_seed(0)
    cold = dam.sample()
    assert (cold - 0.5).abs().mean() > (warm - 0.5).abs().mean()
    assert torch.equal(cold > 0.5, warm > 0.5)


def test_structured_probs_equal_their_toeplitz_expansion():
    dam = DAM(heads=2, n=5, structure="structured")
    with torch.no_grad():
        dam.alpha.copy_(torch.randn(1, 2, 5, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(dam.probs(), toeplitz(torch.sigmoid(dam.alpha.detach())))


def test_structured_sample_is_a_symmetric_toeplitz_mask():
    torch.manual_seed(0)
    sample = DAM(heads=3, n=7, structure="structured").sample().detach()
    assert torch.equal(sample, toeplitz(sample[..., 0, :]))


def test_structured_gradient_reaches_every_distance():
    dam = DAM(heads=2, n=5, structure="structured")
    torch.manual_seed(0)
    dam.sample().sum().backward()
    assert (dam.alpha.grad != 0).all()


@pytest.mark.parametrize("structure", ["unstructured", "structured"])
def test_binarize_matches_keep_probability_above_one_half(structure):
    dam = DAM(heads=3, n=6, layers=2, structure=structure)
    with torch.no_grad():
        dam.alpha.copy_(torch.randn_like(dam.alpha))
    binary = dam.binarize()
    assert binary.dtype == torch.bool
    assert torch.equal(binary, dam.probs() > 0.5)


def test_l1_sum_counts_every_entry_of_the_mask_at_init():
    assert DAM(heads=3, n=4, layers=2).l1().item() == 2 * 3 * 4 * 4 * 0.5


def test_l1_mean_is_the_average_keep_probability():
    assert DAM(heads=3, n=4, layers=2).l1("mean").item() == 0.5


def test_structured_l1_counts_the_expanded_entries():
    dam = DAM(heads=1, n=3, structure="structured")
    with torch.no_grad():
        dam.alpha.copy_(torch.tensor([[[10.0, 0.0, -10.0]]]))
    p = torch.sigmoid(torch.tensor([10.0, 0.0, -10.0]))
    assert torch.isclose(dam.l1(), 3 * p[0] + 4 * p[1] + 2 * p[2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_l1_is_fp32_and_finite_under_autocast(dtype):
    dam = DAM(heads=12, n=128, init=20.0)  # ≈ 196,608 kept entries: beyond fp16's 65,504
    with torch.autocast(device_type="cpu", dtype=dtype):
        l1 = dam.l1()
    assert l1.dtype == torch.float32
    assert l1.item() == 12 * 128 * 128


def test_l1_is_fp32_and_finite_for_a_half_precision_module():
    dam = DAM(heads=12, n=128, init=20.0).half()
    assert dam.l1().dtype == torch.float32
    assert dam.l1().item() == 12 * 128 * 128


def test_half_precision_module_samples_without_nan():
    torch.manual_seed(0)
    sample = DAM(heads=2, n=16).half().sample()
    assert sample.dtype == torch.float16
    assert ((sample == 0) | (sample == 1)).all()


def test_unknown_l1_norm_is_refused():
    with pytest.raises(SparseBertError, match="mask.l1_norm='max'"):
        DAM(heads=1, n=2).l1("max")


def test_unknown_structure_is_refused():
    with pytest.raises(SparseBertError, match="mask.structure='toeplitz'"):
        DAM(heads=1, n=2, structure="toeplitz")


def test_non_positive_tau_is_refused():
    with pytest.raises(SparseBertError, match="mask.tau=0"):
        DAM(heads=1, n=2, tau=0)


def test_tau_stays_constant_without_a_final_value():
    assert annealed_tau(MaskConfig(tau=2.0), step=50, total_steps=100) == 2.0


def test_tau_anneals_linearly_to_its_final_value():
    cfg = MaskConfig(tau=2.0, tau_final=0.5)
    taus = [annealed_tau(cfg, step, total_steps=4) for step in (0, 2, 4, 8)]
    assert taus == [2.0, 1.25, 0.5, 0.5]


def test_dam_u_at_long_n_is_refused_beyond_memory_with_the_estimate_and_the_fix():
    with pytest.raises(SparseBertError, match=r"n=4096 with 12 heads .* 201 M α: about 5\.2 GiB"):
        check_dam_u_size(4096, heads=12, layers=1, memory=4 * 2**30)
    with pytest.raises(SparseBertError, match="mask=dam_s"):  # 12 unshared layers: 56 GiB
        DAM.from_config(
            MaskConfig(name="dam", seq_len=4096, share_layers=False), heads=12, layers=12
        )


def test_dam_u_warns_above_a_gibibyte_and_is_silent_below():
    with pytest.warns(UserWarning, match="n=2048 with 12 heads"):
        check_dam_u_size(2048, heads=12, layers=1, memory=1 << 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_dam_u_size(512, heads=12, layers=1)


@pytest.mark.parametrize(
    "structure, extra",
    [
        ("unstructured", {}),
        ("structured", {}),
        ("block", {}),
        ("block", {"keep_diagonal_blocks": True}),
    ],
)
@pytest.mark.parametrize("target", [None, 0.7])
def test_sums_counted_per_alpha_equal_those_of_the_expanded_mask(structure, extra, target):
    """‖M‖₁ (value and α's gradient), the sign and binarized sparsities and the target's
    threshold, counted per α with the entries each covers, are those of the n × n mask (n = 21
    with tiles of 4: a cropped last tile)."""
    from sparsebert_cli.masks.dam import SparsityTarget
    from sparsebert_cli.masks.stats import sparsity

    dam = DAM(heads=2, n=21, layers=2, structure=structure, block_size=4, **extra)
    dam.target = None if target is None else SparsityTarget(target)
    with torch.no_grad():
        dam.alpha.copy_(torch.randn(dam.alpha.shape, generator=torch.Generator().manual_seed(0)))
    dam.l1().backward()
    per_alpha = dam.alpha.grad.clone()
    dam.alpha.grad = None
    expanded_l1 = dam._expand(torch.sigmoid(dam.alpha)).sum()
    expanded_l1.backward()
    torch.testing.assert_close(dam.l1(), expanded_l1)
    torch.testing.assert_close(per_alpha, dam.alpha.grad)
    sign = dam._expand(dam.alpha.detach() > 0)
    assert dam.sign_sparsity() == pytest.approx(sparsity(sign), abs=1e-4)
    assert dam.binarized_sparsity() == pytest.approx(sparsity(dam.binarize()), abs=1e-4)
    if target is not None:  # the threshold of the expanded α meeting the target
        alpha = dam._expand(dam.alpha.detach())
        if dam.kept_blocks is not None:
            alpha = alpha.masked_fill(dam._expand(torch.zeros_like(dam.alpha)) > 0, float("inf"))
        values = torch.unique(alpha)
        kept = torch.stack([(alpha >= v).double().mean() for v in values])
        theta = values[(kept - (1 - target)).abs().argmin()]
        assert torch.equal(dam.binarize(), alpha >= theta)


@pytest.mark.parametrize("chunk", [2**22, 400, 40], ids=["one-chunk", "partial-chunk", "chunked"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("shape", "n"), [((1,), 1), ((3,), 2), ((2, 3), 7), ((4,), 130)])
def test_expansion_gradients_equal_those_of_plain_indexing(shape, n, dtype, chunk, monkeypatch):
    """expand_distances sums its gradient per distance by skewing, expand_tiles by broadcasting;
    both equal the autograd of the index they replace (values beyond n get none)."""
    from sparsebert_cli.attention import diagonal
    from sparsebert_cli.attention.block_sparse import expand_tiles
    from sparsebert_cli.attention.diagonal import distance_index, expand_distances

    monkeypatch.setattr(diagonal, "SUM_CHUNK", chunk)
    generator = torch.Generator().manual_seed(n)
    block = 3
    blocks = -(-n // block) + 1  # one tile more than n needs: cropped
    block_of = torch.arange(n) // block
    cases = [
        (expand_distances, lambda x: x[..., distance_index(n)], (*shape, n + 2)),
        (
            lambda x, n: expand_tiles(x, block, n),
            lambda x: x[..., block_of[:, None], block_of[None, :]],
            (*shape, blocks, blocks),
        ),
    ]
    for expand, index, size in cases:
        values = torch.randn(size, generator=generator).to(dtype)
        # a transposed (non-contiguous) gradient, as a matmul's backward may hand one on
        grad = torch.randn((*shape, n, n), generator=generator).to(dtype).mT
        ours, plain = (values.clone().requires_grad_(True) for _ in range(2))
        out = expand(ours, n)
        assert torch.equal(out, index(plain))
        out.backward(grad)
        index(plain.double()).backward(grad.double())
        tolerance = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 1e-2)
        assert ours.grad.dtype == dtype
        assert torch.allclose(
            ours.grad.double(), plain.grad.double(), rtol=tolerance, atol=tolerance * n
        )


def test_validate_refuses_a_dam_u_search_this_machine_cannot_hold():
    """`validate` said "config OK"; the run then failed at once and left a failed run folder.
    (n = 65536: about 1.3 TiB, more than any machine this runs on.)"""
    from conftest import compose_cfg

    from sparsebert_cli.validation import preflight

    cfg = compose_cfg("search", "mask=dam", "mask.seq_len=65536", "data.seq_len=65536",
                      "model=base", "model.max_position_embeddings=65536")  # fmt: skip
    with pytest.raises(SparseBertError, match="DAM_u.*at n=65536.*GiB"):
        preflight(cfg)
