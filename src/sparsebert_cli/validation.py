"""Checks of a composed config that types alone cannot express (ranges, choices, combinations).

The schema catches unknown keys and wrong types at composition; this module catches the rest
before anything is loaded or trained, each with a message that names the value and a fix.
"""

from omegaconf import DictConfig

from sparsebert_cli.config import NORM_POSITIONS
from sparsebert_cli.errors import SparseBertError

MASK_SPECIAL = ("dense", "dam", "from_run", "checkpoint")
CHOICES = {
    "mask.structure": ("unstructured", "structured"),
    "mask.l1_norm": ("sum", "mean"),
    "model.preset": ("tiny", "mini", "small", "base", "hf"),
    "model.attention_backend": ("auto", "masked", "block_sparse", "flex"),
    "model.norm": NORM_POSITIONS,
    "trainer.optimizer": ("adamw", "lamb"),
    "trainer.scheduler": ("linear", "poly", "constant"),
    "trainer.precision": ("fp32", "bf16", "fp16"),
    "trainer.device": ("auto", "cpu", "cuda"),
    "logger.name": ("none", "wandb"),
    "logger.mode": ("online", "offline", "disabled"),
    "resume": ("auto", "never"),
}


def _get(cfg: DictConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SparseBertError(message)


def mask_names() -> list[str]:
    from sparsebert_cli.masks.patterns import PATTERNS

    return sorted({*PATTERNS, *MASK_SPECIAL})


def validate_config(cfg: DictConfig) -> None:
    """Raise SparseBertError for the first value that cannot work."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        _require(
            value in allowed,
            f"{key}={value} is not one of {', '.join(allowed)}; set {key}=<one of them>.",
        )
    mask, model, trainer = cfg.mask, cfg.model, cfg.trainer
    names = mask_names()
    _require(
        mask.name in names,
        f"mask.name={mask.name} is not a known mask; use mask=<{'|'.join(names)}>.",
    )
    _require(
        mask.lam >= 0,
        f"mask.lam={mask.lam} is negative; the L1 weight λ must be ≥ 0 (e.g. mask.lam=1e-4).",
    )
    _require(
        mask.tau > 0,
        f"mask.tau={mask.tau} must be > 0 (the Gumbel-sigmoid temperature τ; e.g. mask.tau=1.0).",
    )
    _require(
        mask.tau_final is None or mask.tau_final > 0,
        f"mask.tau_final={mask.tau_final} must be > 0 (or null for a constant τ).",
    )
    _require(
        0 < mask.density <= 1,
        f"mask.density={mask.density} must lie in (0, 1] (fraction of kept entries).",
    )
    _require(mask.seq_len >= 1, f"mask.seq_len={mask.seq_len} must be ≥ 1.")
    _require(
        mask.name != "from_run" or bool(mask.from_run),
        "mask=from_run needs the search run to load: add mask.from=<run_dir> or mask.from=latest.",
    )
    _require(
        cfg.stage != "search" or mask.name == "dam",
        f"`sparsebert search` learns a mask, but mask={mask.name} is fixed; use mask=dam (or mask=dam_s), "
        "or run `sparsebert pretrain mask=...` for a fixed pattern.",
    )
    _require(
        model.hidden_size % model.num_heads == 0,
        f"model.hidden_size={model.hidden_size} is not divisible by model.num_heads={model.num_heads}; "
        "choose sizes where it is (e.g. 256 and 4).",
    )
    _require(
        model.block_size >= 1, f"model.block_size={model.block_size} must be ≥ 1 (e.g. 32 or 64)."
    )
    for key in ("data.seq_len", "task.seq_len"):
        n = _get(cfg, key)
        _require(
            2 <= n <= model.max_position_embeddings,
            f"{key}={n} must lie in [2, model.max_position_embeddings={model.max_position_embeddings}]; "
            f"lower {key} or raise model.max_position_embeddings.",
        )
    _require(
        0 <= cfg.data.mlm_probability < 1,
        f"data.mlm_probability={cfg.data.mlm_probability} must lie in [0, 1).",
    )
    _require(trainer.lr > 0, f"trainer.lr={trainer.lr} must be > 0.")
    _require(
        0 <= trainer.warmup < 1,
        f"trainer.warmup={trainer.warmup} is a fraction of the steps; use [0, 1).",
    )
    _require(
        trainer.max_steps >= 1 or trainer.epochs >= 1,
        "set trainer.max_steps ≥ 1 or trainer.epochs ≥ 1.",
    )
    _require(
        trainer.nproc_per_node >= 1, f"trainer.nproc_per_node={trainer.nproc_per_node} must be ≥ 1."
    )
    per_step = trainer.grad_accum * trainer.nproc_per_node
    _require(
        trainer.batch_size >= 1 and trainer.batch_size % per_step == 0,
        f"trainer.batch_size={trainer.batch_size} (the global batch) must be a positive multiple of "
        f"trainer.grad_accum × trainer.nproc_per_node = {per_step}.",
    )
    _require(
        trainer.precision != "fp16" or trainer.device != "cpu",
        "trainer.precision=fp16 needs a CUDA device; on CPU use trainer.precision=bf16 or fp32.",
    )
