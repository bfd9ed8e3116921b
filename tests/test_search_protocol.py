"""DAM on a trained model: the encoder on its own rate or frozen, a head warm-up on the dense
model before α learns, the distillation objective, and the search run from the CLI."""

import json

import pytest
import torch
from conftest import ROOT, sparsebert, tiny_model
from omegaconf import OmegaConf
from safetensors.torch import load_file

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.masks.source import MaskSource
from sparsebert_cli.modeling import build_pretraining_model
from sparsebert_cli.reporting.occlusion import band_masks
from sparsebert_cli.training.config import TrainerConfig
from sparsebert_cli.training.distill import DistillationObjective
from sparsebert_cli.training.optim import GroupRates, build_optimizer, build_scheduler

VOCAB, N = 40, 10


def dam_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_model(num_layers=1)
    mask = OmegaConf.structured(MaskConfig(name="dam", seq_len=N))
    source = MaskSource.from_config(mask, heads=2, layers=1, n=N)
    return build_pretraining_model(cfg, source, VOCAB, nsp=False), cfg


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (4, N), generator=torch.Generator().manual_seed(1))
    return dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        token_type_ids=torch.zeros_like(ids),
        masked_lm_positions=torch.tensor([[2, 5]] * 4),
        masked_lm_ids=torch.tensor([[3, 4]] * 4),
        masked_lm_weights=torch.ones(4, 2),
    )


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def changed(before: dict, model, prefix: str) -> bool:
    return any(
        not torch.equal(before[k], v) for k, v in model.named_parameters() if k.startswith(prefix)
    )


def steps(model, rates: GroupRates, count: int, head_warmup_mask: bool = False) -> None:
    trainer = TrainerConfig(lr=1e-2, warmup=0.0, scheduler="constant")
    optimizer = build_optimizer(model, trainer, rates)
    scheduler = build_scheduler(optimizer, trainer, 100, rates.head_warmup)
    for step in range(count):
        if head_warmup_mask:
            model.sparse_mask.dam_active = step >= rates.head_warmup
        model(**batch()).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def test_a_frozen_encoder_keeps_its_weights_while_alpha_and_the_head_learn():
    model, _ = dam_model()
    before = snapshot(model)
    steps(model, GroupRates(alpha=0.1, encoder=0.0), 3)
    assert not changed(before, model, "bert.")
    assert changed(before, model, "cls.")
    assert changed(before, model, "sparse_mask.")


def test_a_distillation_search_freezes_and_groups_the_students_encoder():
    """The objective wraps the model (`student.bert.*`): its encoder is still the encoder."""
    model, _ = dam_model()
    objective = DistillationObjective(model, dam_model(seed=1)[0])
    build_optimizer(objective, TrainerConfig(lr=1e-3), GroupRates(alpha=0.1, encoder=0.0))
    assert not any(p.requires_grad for p in model.bert.parameters())
    assert all(p.requires_grad for p in model.cls.predictions.transform.parameters())
    model, _ = dam_model()
    objective = DistillationObjective(model, dam_model(seed=1)[0])
    rates = GroupRates(alpha=0.1, encoder=1e-5)
    optimizer = build_optimizer(objective, TrainerConfig(lr=1e-3), rates)
    encoder = {id(p) for p in model.bert.parameters()}
    for group in optimizer.param_groups:
        if group["name"].startswith("encoder"):
            assert group["lr"] == 1e-5 and {id(p) for p in group["params"]} <= encoder
        elif group["name"] in ("decay", "no_decay"):
            assert not {id(p) for p in group["params"]} & encoder


def test_the_encoder_gets_its_own_learning_rate_group():
    model, _ = dam_model()
    optimizer = build_optimizer(model, TrainerConfig(lr=1e-3), GroupRates(alpha=0.1, encoder=1e-5))
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates["encoder_decay"] == rates["encoder_no_decay"] == 1e-5
    assert rates["decay"] == rates["no_decay"] == 1e-3  # the heads
    assert rates["alpha"] == 0.1
    names = {
        n for g in optimizer.param_groups if g["name"].startswith("encoder") for n in g["params"]
    }
    assert len(names) == sum(1 for n, _ in model.named_parameters() if n.startswith("bert."))


def test_during_the_head_warmup_only_the_head_learns_on_the_dense_model():
    model, _ = dam_model()
    before = snapshot(model)
    steps(model, GroupRates(alpha=0.1, head_warmup=3), 3, head_warmup_mask=True)
    assert changed(before, model, "cls.")
    assert not changed(before, model, "bert.")
    assert not changed(before, model, "sparse_mask.")
    steps(model, GroupRates(alpha=0.1, head_warmup=0), 2, head_warmup_mask=True)
    assert changed(before, model, "bert.") and changed(before, model, "sparse_mask.")


def test_distillation_loss_is_zero_for_the_dense_student_and_grows_with_a_sparse_mask():
    model, cfg = dam_model()
    teacher, _ = dam_model()  # the same seed: the same weights
    teacher.sparse_mask = MaskSource("dense")
    objective = DistillationObjective(model, teacher)
    model.sparse_mask.dam_active = False  # the student attends densely too
    assert objective(**batch())["loss"].item() == pytest.approx(0.0, abs=1e-10)
    model.sparse_mask.dam_active = True
    loss = objective(**batch())["loss"]
    assert loss.item() > 0
    loss.backward()
    assert model.sparse_mask.dam.alpha.grad is not None  # the mask learns from the teacher
    assert all(p.grad is None for p in teacher.parameters())
    assert not any("teacher" in k for k in objective.state_dict())  # not checkpointed


@pytest.fixture(scope="module")
def warm_search(tmp_path_factory):
    """A smoke pre-training, then a distillation search warm-started from it (CLI subprocesses)."""
    root = tmp_path_factory.mktemp("warm")
    env = {
        "SPARSEBERT_RUNS_DIR": str(root / "runs"),
        "SPARSEBERT_CACHE_DIR": str(ROOT / ".cache" / "test-data"),
        "OMP_NUM_THREADS": "1",
    }
    common = ("debug=smoke", "data.nsp=false")
    sparsebert("pretrain", *common, "model.norm=pre", "run_id=pre", cwd=root, env=env)
    sparsebert(
        "search",
        *common,
        "mask=dam_s",
        "model.from=latest",
        "mask.objective=distill",
        "mask.encoder_lr=0",
        "trainer.max_steps=4",
        "run_id=dam",
        cwd=root,
        env=env,
    )
    sparsebert("search", *common, "mask=dam_s", "model.from=latest", "mask.head_warmup=2",
               "mask.encoder_lr=0", "trainer.max_steps=4", "run_id=dam_mlm", cwd=root,
               env=env)  # fmt: skip
    return root / "runs", env


@pytest.mark.slow
def test_search_on_a_pretrained_model_runs_the_protocol_from_the_cli(warm_search):
    search = warm_search[0] / "search" / "dam"
    manifest = json.loads((search / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["inputs"]["model"]["stage"] == "pretrain"
    metrics = json.loads((search / "metrics.json").read_text())
    assert "eval/distill_mse" in metrics and "eval/uses_attention" in metrics
    params = json.loads((search / "artifacts" / "mask.json").read_text())["params"]
    assert (params["objective"], params["head_warmup"], params["encoder_lr"]) == ("distill", 0, 0.0)
    assert not (search / "artifacts" / "model").exists()  # distillation trains no head
    # An MLM head warmed up on the frozen encoder is kept with it (occlusion reads that model).
    mlm = warm_search[0] / "search" / "dam_mlm"
    saved = load_file(str(mlm / "artifacts" / "model" / "model.safetensors"))
    start = load_file(str(warm_search[0] / "pretrain" / "pre" / "artifacts" / "model" /
                          "model.safetensors"))  # fmt: skip
    encoder = [k for k in start if k.startswith("bert.")]
    assert encoder and all(torch.equal(saved[k], start[k]) for k in encoder)
    head = "cls.predictions.transform.dense.weight"
    assert not torch.equal(saved[head], start[head])


@pytest.mark.slow
def test_the_attention_topk_control_is_searched_then_used_as_a_mask(warm_search):
    runs_dir, env = warm_search
    cwd, smoke = runs_dir.parent, ("debug=smoke", "data.nsp=false")
    sparsebert("search", *smoke, "mask=attention_topk", "mask.target_sparsity=0.75",
               f"model.from={runs_dir}/pretrain/pre", "run_id=topk", cwd=cwd, env=env)  # fmt: skip
    search = runs_dir / "search" / "topk"
    meta = json.loads((search / "artifacts" / "mask.json").read_text())
    assert meta["kind"] == "attention_topk" and meta["target_sparsity"] == 75.0
    assert meta["sparsity"]["overall"] == pytest.approx(75.0, abs=0.5)
    manifest = json.loads((search / "manifest.json").read_text())
    assert manifest["inputs"]["model"]["run_dir"] == str(runs_dir / "pretrain" / "pre")
    sparsebert("pretrain", *smoke, f"model.from={runs_dir}/pretrain/pre", "mask=from_run",
               f"mask.from={search}", "trainer.max_steps=2", "run_id=topk-use", cwd=cwd,
               env=env)  # fmt: skip
    used = json.loads((runs_dir / "pretrain" / "topk-use" / "artifacts" / "model" /
                       "mask.json").read_text())  # fmt: skip
    assert used["kind"] == "attention_topk" and used["sha256"] == meta["sha256"]
    # That model was trained with a sparse mask: its attention is no dense model's to rank
    # (the control ran it dense and said nothing).
    refused = sparsebert("validate", "search", *smoke, "mask=attention_topk",
                         f"model.from={runs_dir}/pretrain/topk-use", cwd=cwd, env=env,
                         check=False)  # fmt: skip
    assert refused.returncode == 1 and "pre-trained with the attention_topk mask" in refused.stderr


@pytest.mark.slow
@pytest.mark.parametrize("run", ["pretrain/pre", "search/dam", "search/dam_mlm"])
def test_occlusion_report_measures_every_band_of_the_starting_model(warm_search, run):
    runs_dir, env = warm_search
    run_dir = runs_dir / run
    proc = sparsebert(
        "report",
        "--occlusion",
        str(run_dir),
        "--max-distance",
        "3",
        "--examples",
        "16",
        cwd=runs_dir.parent,
        env=env,
    )
    record = json.loads((run_dir / "figures" / "occlusion.json").read_text())
    assert str(run_dir / "figures" / "occlusion.json") in proc.stdout
    assert [b["band"] for b in record["bands"]] == ["diag", "d=1", "d=2", "d=3", "cls"]
    # pre's own model; the distillation search's starting model (pre's); dam_mlm's saved one
    # (pre's frozen encoder with the MLM head it warmed up).
    own = "pretrain/pre" if run == "search/dam" else run
    assert record["model"].endswith(f"{own}/artifacts/model") and record["trained_mlm_head"]
    for band in record["bands"]:  # a dense model attends to every band: removing one tells
        assert 0 < band["attention_mass"] <= 1 and band["hidden_mse"] > 0
    # (a smoke model's loss may not move past float rounding for every band, but for some)
    assert any(band["delta_mlm_loss"] != 0 for band in record["bands"])
    searched = run.startswith("search")
    assert ("spearman" in record) == searched
    assert all(("keep_probability" in b) == searched for b in record["bands"])


@pytest.mark.slow
def test_occlusion_refuses_a_max_distance_past_the_runs_sequences(warm_search):
    runs_dir, env = warm_search
    proc = sparsebert("report", "--occlusion", str(runs_dir / "pretrain" / "pre"),
                      "--max-distance", "64", cwd=runs_dir.parent, env=env, check=False)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--max-distance 64 reaches past the run's sequences (data.seq_len=64)" in proc.stderr
    assert "use --max-distance 63 or less" in proc.stderr


def test_occlusion_refuses_a_finetune_run_though_it_holds_a_model(tmp_path):
    """A classifier's weights are not the pre-training model occlusion measures the MLM loss of."""
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.reporting.occlusion import _starting_model

    run_dir = tmp_path / "runs" / "finetune" / "f1"
    (run_dir / "artifacts" / "model").mkdir(parents=True)
    cfg = OmegaConf.create({"model": {"from_run": None}})
    with pytest.raises(SparseBertError, match="is a 'finetune' run; --occlusion reads a pretrain"):
        _starting_model(run_dir, {"stage": "finetune", "inputs": {}}, cfg)


def test_occlusion_refuses_a_model_pre_trained_with_a_sparse_mask(tmp_path):
    """It measured such a model without its mask (uniform attention) and said nothing; a search
    started from it occludes the same encoder."""
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.reporting.occlusion import _starting_model

    run_dir = tmp_path / "runs" / "pretrain" / "p1"
    model = run_dir / "artifacts" / "model"
    model.mkdir(parents=True)
    cfg = OmegaConf.create({"model": {"from_run": None}})
    pretrain = {"stage": "pretrain", "inputs": {}}
    search = {"stage": "search", "inputs": {"model": {"run_dir": str(run_dir)}}}
    for kind in ("dense", "dam_u"):
        (model / "sparsebert.json").write_text(
            json.dumps({"head": "pretraining", "nsp": False, "mask": {"kind": kind}})
        )
        if kind == "dense":
            assert _starting_model(run_dir, pretrain, cfg).from_run == str(run_dir)
            assert _starting_model(tmp_path / "s", search, cfg).from_run == str(run_dir)
            continue
        for manifest in (pretrain, search):
            with pytest.raises(SparseBertError, match="pre-trained with the dam_u mask; occlusion"):
                _starting_model(run_dir if manifest is pretrain else tmp_path / "s", manifest, cfg)


def test_band_masks_remove_exactly_one_band():
    masks = band_masks(n=6, heads=2, max_distance=2)
    assert list(masks) == ["diag", "d=1", "d=2", "cls"]
    assert not masks["diag"][0, 1].diagonal().any() and masks["diag"].sum() == 2 * (36 - 6)
    assert masks["d=1"].sum() == 2 * (36 - 10)
    assert not masks["cls"][0, 0, 1:, 0].any() and masks["cls"][0, 0, 0, 0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("search", "mask=dam", "mask.objective=distill"), "no trained model is loaded"),
        (
            ("search", "mask=dam", "model=minilm", "mask.objective=distill", "mask.head_warmup=3"),
            "mask.head_warmup=3 warms up the MLM head",
        ),
        (("pretrain", "mask.head_warmup=5"), "does not read them"),
        (("search", "mask=dam", "mask.encoder_lr=-1"), "mask.encoder_lr=-1"),
        (("search", "mask=attention_topk"), "needs model.from=<pretrain run>"),
        (("pretrain", "mask=attention_topk"), "made by `sparsebert search mask=attention_topk`"),
    ],
)
def test_protocol_settings_that_cannot_work_are_refused(workdir, args, fragment):
    proc = sparsebert("validate", *args, cwd=workdir, check=False)
    assert proc.returncode == 1
    assert fragment in proc.stderr + proc.stdout


def test_a_head_warmup_as_long_as_the_search_is_refused():
    """α stood still for every step and the search handed on the mask of its init (at init 0,
    binarised 1[α > 0]: nothing kept), with only a warning at the end."""
    from conftest import compose_cfg

    from sparsebert_cli.validation import validate_config

    warm = ("model=minilm", "mask=dam", "mask.encoder_lr=0", "trainer.max_steps=10")
    with pytest.raises(SparseBertError, match=r"mask.head_warmup=10 holds α still .* runs 10"):
        validate_config(compose_cfg("search", *warm, "mask.head_warmup=10"))
    validate_config(compose_cfg("search", *warm, "mask.head_warmup=9"))
