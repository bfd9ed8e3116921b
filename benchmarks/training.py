"""Training-step benchmarks (issue 8, items 1–2), each a ratio against a peer in the same process.

training: tokens/s of sparsebert's pre-training step (`build_pretraining_model`, dense mask,
    masked-position MLM head) against Hugging Face's `BertForMaskedLM` (logits at every token) with
    the same architecture (conf/model/small.yaml), vocabulary (30,522), batch and n = 128.
dam: a `search` step (DAM_u sample with Gumbel noise and straight-through, λ·‖M‖₁, α in its own
    optimiser group, the stage's per-step mask metrics) against a `pretrain` step of the same model
    with a fixed mask (conf/mask/window.yaml).
dam_long: the same at n = 1024 and 2048 (issue 18, item 4) for DAM_s and block DAM, batch 1.

A step is the loop's own `optimizer_step` with one micro-batch: forward (+ penalty), backward,
gradient clipping, optimiser and schedule step, zero_grad, with the project's own optimiser
(training/optim.py: AdamW, its parameter groups) for both sides of every ratio.
"""

import torch
from torch import nn

from benchmarks.harness import check, compare, load_conf, markdown_table

VOCAB, SEQ_LEN, PREDICTIONS = 30_522, 128, 20  # BERT's vocabulary; data.max_predictions_per_seq
TRAINING_TARGET, DAM_TARGET = 2.5, 1.15
DAM_LONG = {"ns": (1024, 2048), "model": "small", "batch": 1, "repeats": 3}
DAM_LONG_QUICK = {"ns": (256,), "model": "tiny", "batch": 1, "repeats": 1}
DAM_LONG_TARGET = 1.3
# The steady state of a search steered to 90 % sparsity: each tile (block DAM; diagonal tiles
# kept) or distance (DAM_s) kept with probability 0.1 (α = logit 0.1), against pre-training with
# such a fixed mask.
DAM_LONG_KEEP = 0.1
# A DAM_s search that has settled on the window band (kept near the diagonal, as the paper finds
# its masks): α = 4 up to the window mask's width, −8 beyond (a far distance kept with
# probability σ(−8) ≈ 3·10⁻⁴ per head and step), against pre-training with that window.
DAM_LONG_BAND_ALPHA = (4.0, -8.0)


def _settings(quick: bool) -> dict:
    return {
        "model": "tiny" if quick else "small",
        "batch": 2 if quick else 8,
        "repeats": 2 if quick else 5,
    }


def _batch(
    batch: int, device: torch.device, seq_len: int = SEQ_LEN, predictions: int = PREDICTIONS
) -> dict[str, torch.Tensor]:
    """A pre-training batch as collate_pretraining makes it, plus the equivalent HF labels."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, VOCAB, (batch, seq_len), generator=g)
    positions = torch.stack(
        [torch.randperm(seq_len - 2, generator=g)[:predictions] + 1 for _ in range(batch)]
    )
    targets = ids.gather(1, positions)
    labels = torch.full_like(ids, -100).scatter(1, positions, targets)  # HF: -100 = no loss
    tensors = {
        "input_ids": ids,
        "token_type_ids": torch.zeros_like(ids),
        "attention_mask": torch.ones_like(ids),
        "masked_lm_positions": positions,
        "masked_lm_ids": targets,
        "masked_lm_weights": torch.ones(batch, predictions),
        "labels": labels,
    }
    return {k: v.to(device) for k, v in tensors.items()}


def _trainer():
    from sparsebert_cli.training.config import TrainerConfig

    return load_conf("trainer", "default", TrainerConfig)


def _step(model: nn.Module, inputs: dict, penalty=None, after_step=None, alpha_lr=None):
    """One optimiser step of the real loop (`training.loop.optimizer_step`, fp32, one micro-batch)."""
    from sparsebert_cli.training.loop import Penalised, optimizer_step
    from sparsebert_cli.training.optim import GroupRates, build_optimizer, build_scheduler

    trainer = _trainer()
    optimizer = build_optimizer(model, trainer, GroupRates(alpha=alpha_lr))
    scheduler = build_scheduler(optimizer, trainer, 1_000_000)
    scaler = torch.amp.GradScaler(enabled=False)
    objective = Penalised(model, penalty).train()

    def step() -> float:
        loss, _ = optimizer_step(objective, [inputs], optimizer, scheduler, scaler, trainer)
        if after_step is not None:
            after_step()
        return loss

    return step


def _model_cfg(preset: str):
    from sparsebert_cli.config import ModelConfig

    return load_conf("model", preset, ModelConfig)


def _source(model_cfg, mask_cfg, n: int = SEQ_LEN):
    """The MaskSource of a mask config (None: dense) for this model at length n."""
    from sparsebert_cli.masks.source import MaskSource

    if mask_cfg is None:
        return MaskSource("dense")
    heads, layers, block = model_cfg.num_heads, model_cfg.num_layers, model_cfg.block_size
    return MaskSource.from_config(mask_cfg, heads, layers, n, block)


def _sparsebert(model_cfg, source, device: torch.device):
    """sparsebert's pre-training model (MLM, no NSP) attending with `source` (None: dense)."""
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import build_pretraining_model

    torch.manual_seed(0)
    source = MaskSource("dense") if source is None else source
    return build_pretraining_model(model_cfg, source, VOCAB, nsp=False).to(device)


def _hugging_face(model_cfg, device: torch.device):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=model_cfg.hidden_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        intermediate_size=model_cfg.intermediate_size,
        max_position_embeddings=model_cfg.max_position_embeddings,
        hidden_dropout_prob=model_cfg.dropout,
        attention_probs_dropout_prob=model_cfg.attention_dropout,
        attn_implementation="sdpa",  # HF's fastest BERT attention
    )
    torch.manual_seed(0)
    return BertForMaskedLM(config).to(device)


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def _model_line(model_cfg) -> str:
    return (
        f"{model_cfg.num_layers} layers × {model_cfg.hidden_size} hidden × {model_cfg.num_heads} "
        f"heads, FFN {model_cfg.intermediate_size}, vocabulary {VOCAB:,}, n = {SEQ_LEN}"
    )


def run_training(device: torch.device, quick: bool) -> dict:
    """Item 1: pre-training tokens/s of sparsebert against HF BertForMaskedLM, dense mask; and the
    same model with attention of zero cost (e2e's ceiling), what no attention kernel can pass."""
    from benchmarks.e2e import CEILING, _register_ceiling

    settings = _settings(quick)
    model_cfg = _model_cfg(settings["model"])
    inputs = _batch(settings["batch"], device)
    ours = _sparsebert(model_cfg, None, device)
    theirs = _hugging_face(model_cfg, device)
    _register_ceiling()
    ceiling = _sparsebert(model_cfg, None, device)
    ceiling.config._attn_implementation = CEILING
    hf_inputs = {k: inputs[k] for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}
    sb_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    timings = compare(
        {
            "sparsebert": _step(ours, sb_inputs),
            "hf_bert_for_masked_lm": _step(theirs, hf_inputs),
            "sparsebert_attention_free": _step(ceiling, sb_inputs),
        },
        device,
        settings["repeats"],
    )
    tokens = settings["batch"] * SEQ_LEN
    for t in timings.values():
        t["tokens_per_s"] = tokens / t["median_s"]
    hf = timings["hf_bert_for_masked_lm"]["tokens_per_s"]
    ratio = timings["sparsebert"]["tokens_per_s"] / hf
    ceiling_ratio = timings["sparsebert_attention_free"]["tokens_per_s"] / hf
    checks = [
        check(
            f"pre-training tokens/s vs HF BertForMaskedLM (model={settings['model']})",
            ratio,
            "≥",
            TRAINING_TARGET,
            f"attention-free ceiling ×{ceiling_ratio:.2f}",
        )
    ]
    rows = [
        [name, t["tokens_per_s"], t["tokens_per_s"] / hf, t["median_s"],
         f"{t['min_s']:.3f}–{t['max_s']:.3f}"]
        for name, t in timings.items()
    ]  # fmt: skip
    details = (
        f"Model: {_model_line(model_cfg)}; batch {settings['batch']}; {PREDICTIONS} masked "
        "positions per sequence; dense mask; AdamW step with clipping. "
        "sparsebert_attention_free: the same model whose attention costs nothing (the value "
        "passes through; `python -m benchmarks e2e`'s ceiling): no attention kernel or mask "
        "makes the step faster than it.\n\n"
        + markdown_table(["step", "tokens/s", "× HF", "median s", "min–max s"], rows)
    )
    setup = {**settings, "model_config": _plain(model_cfg), "seq_len": SEQ_LEN, "vocab": VOCAB}
    return {"setup": setup, "timings": timings, "checks": checks, "details_md": details}


def _search_step(model: nn.Module, inputs: dict, dam_cfg):
    """One step of the search: the DAM's penalty (λ·‖M‖₁ or the target's Lagrangian), α in its
    own group, and stages/search.py's per-step mask metrics."""
    from sparsebert_cli.training.dam import add_dam_hooks
    from sparsebert_cli.training.loop import Hooks

    dam = model.sparse_mask.dam
    hooks = add_dam_hooks(Hooks(), dam_cfg, dam, total_steps=1)

    def mask_metrics() -> None:  # as stages/search.py's after_step, counted per α
        dam.binarized_sparsity()
        dam.expected_sparsity().item()

    return _step(model, inputs, hooks.penalty, mask_metrics, alpha_lr=dam_cfg.lr)


def run_dam(device: torch.device, quick: bool) -> dict:
    """Item 2: a DAM search step against a pretrain step with a fixed mask, same model."""
    from sparsebert_cli.masks.config import MaskConfig

    settings = _settings(quick)
    model_cfg = _model_cfg(settings["model"])
    inputs = {k: v for k, v in _batch(settings["batch"], device).items() if k != "labels"}
    dam_cfg = load_conf("mask", "dam", MaskConfig)
    fixed_cfg = load_conf("mask", "window", MaskConfig)
    search = _sparsebert(model_cfg, _source(model_cfg, dam_cfg), device)
    pretrain = _sparsebert(model_cfg, _source(model_cfg, fixed_cfg), device)
    timings = compare(
        {
            "search_dam": _search_step(search, inputs, dam_cfg),
            "pretrain_fixed": _step(pretrain, inputs),
        },
        device,
        settings["repeats"],
    )
    ratio = timings["search_dam"]["median_s"] / timings["pretrain_fixed"]["median_s"]
    checks = [
        check(
            f"DAM search step / fixed-mask pretrain step (model={settings['model']})",
            ratio,
            "≤",
            DAM_TARGET,
        )
    ]
    rows = [
        [name, t["median_s"], f"{t['min_s']:.3f}–{t['max_s']:.3f}"] for name, t in timings.items()
    ]
    details = (
        f"Model: {_model_line(model_cfg)}; batch {settings['batch']}. search: mask=dam "
        f"({dam_cfg.structure}, shared by all layers, λ = {dam_cfg.lam:g}, attention backend "
        "auto → masked); pretrain: mask=window (window "
        f"{fixed_cfg.window}, auto → sdpa at n = {SEQ_LEN}).\n\n"
        + markdown_table(["step", "median s", "min–max s"], rows)
    )
    setup = {**settings, "model_config": _plain(model_cfg), "dam": _plain(dam_cfg)}
    setup["fixed_mask"] = _plain(fixed_cfg)
    return {"setup": setup, "timings": timings, "checks": checks, "details_md": details}


def _scattered_distances(n: int, heads: int, keep: float) -> torch.Tensor:
    """bool [heads, n, n]: each head keeps each distance |i − j| with probability `keep`
    (seeded), a DAM_s sample's shape."""
    from sparsebert_cli.attention.diagonal import expand_distances

    kept = torch.rand(heads, n, generator=torch.Generator().manual_seed(0)) < keep
    return expand_distances(kept, n)


def _dam_long_steps(model_cfg, fixed_cfg, n: int, inputs: dict, device: torch.device) -> dict:
    """dam_long's candidates at length n: {name: one step}."""
    import math

    from omegaconf import OmegaConf

    from benchmarks.attention import scattered_tiles
    from sparsebert_cli.masks.config import MaskConfig
    from sparsebert_cli.masks.source import MaskSource

    logit = math.log(DAM_LONG_KEEP / (1 - DAM_LONG_KEEP))
    heads, block_size = model_cfg.num_heads, model_cfg.block_size

    def fixed(mask: torch.Tensor | None):
        source = (
            _source(model_cfg, fixed_cfg, n)
            if mask is None
            else MaskSource("fixed", mask=mask[None])
        )
        return _step(_sparsebert(model_cfg, source, device), inputs)

    def search(alpha: torch.Tensor | None = None, backend: str = "auto", **mask):
        dam_cfg = OmegaConf.merge(load_conf("mask", "dam", MaskConfig), {"seq_len": n, **mask})
        cfg = OmegaConf.merge(model_cfg, {"attention_backend": backend})
        source = _source(cfg, dam_cfg, n)
        if alpha is not None:
            with torch.no_grad():
                source.dam.alpha.copy_(alpha.expand_as(source.dam.alpha))
        return _search_step(_sparsebert(cfg, source, device), inputs, dam_cfg)

    steps = {"pretrain_fixed": fixed(None)}
    steps["pretrain_tiles_50"] = fixed(scattered_tiles(n, heads, block_size, 0.5))
    steps["search_block"] = search(structure="block", keep_diagonal_blocks=True)
    steps["pretrain_distances_50"] = fixed(_scattered_distances(n, heads, 0.5))
    steps["search_structured"] = search(structure="structured")
    steps["pretrain_tiles_90"] = fixed(scattered_tiles(n, heads, block_size, DAM_LONG_KEEP))
    steps["search_block_90"] = search(structure="block", keep_diagonal_blocks=True, init=logit)
    steps["pretrain_distances_90"] = fixed(_scattered_distances(n, heads, DAM_LONG_KEEP))
    steps["search_structured_90"] = search(structure="structured", init=logit)
    band = torch.full((n,), DAM_LONG_BAND_ALPHA[1])
    band[: fixed_cfg.window + 1] = DAM_LONG_BAND_ALPHA[0]
    for backend in ("auto", "masked"):
        suffix = "" if backend == "auto" else "_masked"
        steps[f"search_structured_band{suffix}"] = search(band, backend, structure="structured")
    return steps


def run_dam_long(device: torch.device, quick: bool) -> dict:
    """Issue 18, item 4: the search step at long n — DAM_s and block DAM (DAM_u is refused there
    with its memory estimate) at α = 0 (half the entries kept) and at 90 % sparsity (hard
    samples run block-sparse: a block DAM's tiles, a DAM_s's distances), each against
    pre-training with a fixed mask of its samples' shape and density (each on the backend auto
    picks), and a DAM_s settled on the window band against pre-training with that window, also
    on the `masked` backend (its path before the sparse kernels took its samples); every step is
    also shown against the window step. Batch 1, 15 % of the positions predicted."""
    from omegaconf import OmegaConf

    from sparsebert_cli.attention.interface import AUTO_MAX_SAMPLE_DENSITY
    from sparsebert_cli.masks.config import MaskConfig

    settings = DAM_LONG_QUICK if quick else DAM_LONG
    base = _model_cfg(settings["model"])
    fixed_cfg = load_conf("mask", "window", MaskConfig)
    # each search against pre-training with a fixed mask like its samples (same shape, density),
    # each on the backend auto picks; the band search against the window it settled on
    peers = {
        "search_block": "pretrain_tiles_50",
        "search_structured": "pretrain_distances_50",
        "search_block_90": "pretrain_tiles_90",
        "search_structured_90": "pretrain_distances_90",
        "search_structured_band": "pretrain_fixed",
        "search_structured_band_masked": "pretrain_fixed",
    }
    timings, checks, rows = {}, [], []
    for n in settings["ns"]:
        model_cfg = OmegaConf.merge(base, {"max_position_embeddings": n})
        batch = _batch(settings["batch"], device, n, int(0.15 * n))
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        candidates = _dam_long_steps(model_cfg, fixed_cfg, n, inputs, device)
        measured = timings[str(n)] = compare(candidates, device, settings["repeats"])
        fixed_s = measured["pretrain_fixed"]["median_s"]
        for name, t in measured.items():
            peer = t["median_s"] / measured[peers[name]]["median_s"] if name in peers else ""
            rows.append([n, name, t["median_s"], f"{t['min_s']:.3f}–{t['max_s']:.3f}",
                         t["median_s"] / fixed_s, peer])  # fmt: skip
        model = f"n={n} (model={settings['model']})"
        for name, what in (
            ("search_block", "block DAM search step at α = 0 / pretrain step with a fixed mask of "
             "50 % of the tiles (and the diagonal ones)"),
            ("search_structured", "structured DAM search step at α = 0 / pretrain step with a "
             "fixed mask of 50 % of the distances"),
            ("search_block_90", "block DAM search step at 90 % sparsity / pretrain step with a "
             "fixed 10 % tile mask"),
            ("search_structured_90", "structured DAM search step at 90 % sparsity (random "
             "distances) / pretrain step with a fixed mask of 10 % of the distances"),
            ("search_structured_band", "structured DAM search step settled on the window band "
             "/ window-mask pretrain step"),
        ):  # fmt: skip
            ratio = measured[name]["median_s"] / measured[peers[name]]["median_s"]
            checks.append(check(f"{what}, {model}", ratio, "≤", DAM_LONG_TARGET))
    details = (
        f"Model: conf/model/{settings['model']}.yaml, vocabulary {VOCAB:,}, batch "
        f"{settings['batch']}. search_structured / search_block: mask=dam with "
        f"structure=structured (DAM_s) or block (model.block_size tiles, the diagonal ones kept) "
        f"at α = 0 (half the entries kept: where a search starts), λ·‖M‖₁; auto → block_sparse "
        f"from the block DAM's tiles (block density about 0.5), masked for the DAM_s (half its "
        f"distances touch every tile); their fixed peers pretrain_tiles_50 / "
        f"pretrain_distances_50 keep each tile (and the diagonal ones) / each distance per head "
        f"with probability 0.5, auto (→ block_sparse with attention dropout on CPU / → sdpa, "
        f"every tile touched): each search against training with a mask like its samples, each "
        f"on the backend auto picks; "
        f"pretrain_fixed: mask=window (window {fixed_cfg.window}), auto → block_sparse, the "
        f"'/ window step' column. "
        f"search_block_90 / search_structured_90: α = logit {DAM_LONG_KEEP} for every tile / "
        f"distance (a search steered to 90 % sparsity; a block DAM keeps its diagonal tiles), "
        f"auto → block_sparse from the hard sample's tiles / distances (tile or diagonal kernel, "
        f"whichever its layout prices lower, up to block density {AUTO_MAX_SAMPLE_DENSITY}; the "
        f"DAM_s's random distances, drawn per head, touch nearly every tile and their union over "
        f"the heads is too many diagonals, so with these {base.num_heads} heads it runs "
        f"`masked`); "
        f"search_structured_band: a DAM_s with α = {DAM_LONG_BAND_ALPHA[0]:g} up to distance "
        f"{fixed_cfg.window} and {DAM_LONG_BAND_ALPHA[1]:g} beyond (a search settled on the "
        f"window band), auto; _masked: the same on model.attention_backend=masked (the n × n "
        f"float mask and its gradient, the path every DAM_s sample took before); "
        f"pretrain_tiles_90 / pretrain_distances_90: a fixed mask of tiles (and the diagonal "
        f"ones) / of distances per head kept with probability {DAM_LONG_KEEP}, auto.\n\n"
        + markdown_table(
            ["n", "step", "median s", "min–max s", "/ window step", "/ its fixed peer"], rows
        )
    )
    setup = {**settings, "model_config": _plain(base), "fixed_mask": _plain(fixed_cfg)}
    return {"setup": setup, "timings": timings, "checks": checks, "details_md": details}
