"""Schema of the `mask` config group (torch-free: composing a config must stay instant)."""

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields

from omegaconf import DictConfig

from sparsebert_cli.errors import SparseBertError

# DAM's structures (mask.structure) and the kind each gives its searched mask (mask.json).
DAM_KINDS = {"unstructured": "dam_u", "structured": "dam_s", "block": "dam_b"}
DAM_STRUCTURES = tuple(DAM_KINDS)
L1_NORMS = ("sum", "mean")  # mask.l1_norm

MASK_FILE, META_FILE = "mask.safetensors", "mask.json"  # a mask artifact's tensor and metadata
PLOT_FILE = "mask.png"  # and its heat map


def physical_memory() -> int:
    """Bytes of RAM of this machine (what a mask built or learned here must fit in)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


SEARCH_OBJECTIVES = ("mlm", "distill")
# The masks `sparsebert search` makes (a pipeline searches them first): the learnable DAM and its
# attention-mass top-k control (masks/attention_topk.py).
ATTENTION_TOPK = "attention_topk"
SEARCHED_MASKS = ("dam", ATTENTION_TOPK)


@dataclass
class MaskConfig:
    # Pattern name: dense, no_diag, strided, fixed, longformer, logsparse, bigbird, star, window,
    # random (fixed patterns), dam (learnable, DAM_u / DAM_s), attention_topk (a trained model's
    # most attended entries, made by search) or from_run (a searched mask).
    name: str = "dense"
    # --- fixed-pattern parameters (each pattern reads the ones it needs) ---
    window: int = 0  # band half-width: keys with |i - j| <= window
    stride: int = 0  # Sparse Transformer block / stride length l
    c: int = 0  # Fixed pattern: number of summary positions at the end of each block
    global_tokens: int = 0  # first g tokens attend to all and are attended by all
    random_keys: int = 0  # BigBird: random keys per query
    density: float = 0.1  # random pattern: fraction of kept entries
    seed: int = 0  # seed of the random parts of a pattern
    # --- DAM (Differentiable Attention Mask) ---
    # unstructured (DAM_u) | structured (DAM_s, Toeplitz) | block (one α per model.block_size tile)
    structure: str = "unstructured"
    lam: float = 1e-4  # λ of the L1 penalty λ·‖M‖₁ (0 with target_sparsity)
    # Instead of λ: Lagrange multipliers steer the sign mask 1[α > 0] toward this sparsity (the
    # expected sparsity ŝ carries the gradient) and the mask handed on is 1[α ≥ θ] at exactly it
    # (None: use λ); attention_topk: the sparsity of its mask
    target_sparsity: float | None = None
    # the DAM's first steps (after any head_warmup) over which the target rises from 0 linearly
    target_warmup: int = 0
    lagrangian_lr: float = 1e-5  # learning rate of the multipliers λ₁, λ₂ (gradient ascent)
    keep_diagonal_blocks: bool = False  # block DAM: always keep the diagonal tiles
    l1_norm: str = "sum"  # sum (as in the paper) | mean
    tau: float = 1.0  # Gumbel-sigmoid temperature τ
    # anneal τ linearly to this over the DAM's steps (after any head_warmup; None: constant)
    tau_final: float | None = None
    hard: bool = True  # hard straight-through: forward 0/1, gradients through the soft value
    init: float = 0.0  # initial α (0 -> keep probability 0.5)
    lr: float = 1e-2  # learning rate of α (own optimiser group, no weight decay)
    seq_len: int = 128  # n of a learnable mask: the stage's sequence length (validation)
    share_layers: bool = True  # one mask per head for all layers (reference code), or per layer
    trace_every: int = 10  # importance trace: σ(α) snapshot every K steps
    # --- the search on a trained model (stages/search.py) ---
    objective: str = "mlm"  # mlm: L_pretrain | distill: MSE to the frozen dense model's states
    # first steps: only the pre-training heads learn, on the dense model (no sparsity penalty)
    head_warmup: int = 0
    encoder_lr: float | None = None  # None: trainer.lr (joint, the paper) | 0: frozen | own rate
    # --- a searched mask (name=from_run) ---
    from_run: str | None = None  # run dir of a search run, or "latest"


def check_dam_config(cfg: MaskConfig | DictConfig) -> None:
    """Refuse DAM settings that cannot work together (a SparseBertError naming the fix); each
    one's range is checked before, with the others (config.RANGES)."""
    target = cfg.target_sparsity
    if target is not None and cfg.lam != 0 and cfg.name == "dam":
        raise SparseBertError(
            f"mask.target_sparsity={target} and mask.lam={cfg.lam} are both set: the target "
            "replaces the L1 penalty λ·‖M‖₁. Add mask.lam=0 to steer to the target, or drop "
            "mask.target_sparsity to keep the L1 penalty."
        )
    if cfg.keep_diagonal_blocks and cfg.structure != "block":
        raise SparseBertError(
            f"mask.keep_diagonal_blocks=true needs mask.structure=block (got "
            f"{cfg.structure}); set mask.structure=block or drop mask.keep_diagonal_blocks."
        )


# A DAM reads these only with mask.target_sparsity set.
TARGET_ONLY = ("target_warmup", "lagrangian_lr")

# The MaskConfig fields each fixed pattern reads: masks/patterns.py's PATTERNS take them as
# keyword arguments (a test holds the two together). Here, torch-free, for the report and hash.
PATTERN_FIELDS: dict[str, tuple[str, ...]] = {
    "dense": (),
    "no_diag": (),
    "strided": ("stride",),
    "fixed": ("stride", "c"),
    "longformer": ("window", "global_tokens"),
    "logsparse": (),
    "bigbird": ("window", "global_tokens", "random_keys", "seed"),
    "star": (),
    "window": ("window",),
    "random": ("density", "seed"),
}
# What the other non-DAM masks read: a searched mask its run; the checkpoint's mask nothing.
MASK_FIELDS: dict[str, tuple[str, ...]] = {
    **PATTERN_FIELDS,
    "from_run": ("from_run",),
    "checkpoint": (),
    ATTENTION_TOPK: ("target_sparsity", "share_layers"),
}
# The fields only fixed patterns read.
PATTERN_ONLY = tuple(sorted({field for fields in PATTERN_FIELDS.values() for field in fields}))
# The pattern fields a DAM's identity has held since they were hashed beside it (`mask_identity`),
# frozen: a pattern field added later (docs/extending.md) leaves every DAM run's hash as it was.
DAM_HASHED_PATTERN_FIELDS = (
    "c",
    "density",
    "global_tokens",
    "random_keys",
    "seed",
    "stride",
    "window",
)
# The fields a DAM can read: all but the patterns' and the searched mask's.
DAM_FIELDS = tuple(
    f.name for f in fields(MaskConfig) if f.name not in (*PATTERN_ONLY, "name", "from_run")
)


def read_fields(mask: Mapping) -> tuple[str, ...]:
    """The settings mask=`mask["name"]` reads besides its name: what a run refuses beside it
    (`unread_field_problem`) and what its content hash keeps (`mask_identity`). A DAM reads the
    target's settings only with a target, keep_diagonal_blocks only as a block DAM."""
    if mask["name"] != "dam":
        return MASK_FIELDS.get(mask["name"], ())
    unread = [*(TARGET_ONLY if mask.get("target_sparsity") is None else ())]
    if mask.get("structure") != "block":
        unread.append("keep_diagonal_blocks")
    return tuple(f for f in DAM_FIELDS if f not in unread)


def _readers(field: str) -> str:
    """The masks that read mask.`field`, for a message."""
    if field in TARGET_ONLY:
        return "mask=dam with mask.target_sparsity set"
    if field == "keep_diagonal_blocks":
        return "mask=dam_block"
    names = [name for name, read in MASK_FIELDS.items() if field in read]
    if field in DAM_FIELDS:
        names.append("dam (dam_s, dam_block)")
    return "mask=" + ", ".join(names)


def unread_field_problem(mask: Mapping, field: str) -> str | None:
    """Why the chosen mask would ignore mask.`field` set on the command line, or None when it
    reads it."""
    if field == "name" or field in read_fields(mask):
        return None
    return (
        f"mask.{field} is set, but mask={mask['name']} does not read it, so it would be ignored; "
        f"drop mask.{field}, or choose a mask that reads it ({_readers(field)})."
    )


def mask_identity(mask: Mapping) -> dict:
    """Only the mask settings the chosen mask reads (what makes two masks differ): dense with
    λ=1e-4 is dense with λ=1e-3, and window with stride=3 is window. A DAM's identity is every
    key but the DAM settings it does not read (and a None target), the checkpoint's its from_run:
    the pattern keys and from_run were hashed before they were refused beside them, and earlier
    runs keep their hash."""
    name = mask["name"]
    if name == "dam":
        unread = set(DAM_FIELDS) - set(read_fields(mask))
        unread |= set(PATTERN_ONLY) - set(DAM_HASHED_PATTERN_FIELDS)
        if mask.get("target_sparsity") is None:
            unread.add("target_sparsity")
        return {k: v for k, v in mask.items() if k not in unread}
    read = ("from_run",) if name == "checkpoint" else read_fields(mask)
    return {"name": name, **{k: mask.get(k) for k in read}}


def head_warmup_problem(head_warmup: int, total: int) -> str | None:
    """Why `head_warmup` warm-up steps leave a run of `total` steps nothing to learn α in."""
    if head_warmup == 0 or head_warmup < total:
        return None
    return (
        f"mask.head_warmup={head_warmup} holds α still for the first {head_warmup} steps, but the "
        f"search runs {total}: the mask would never be learned (α stays at mask.init and the "
        "handed-on mask is what its init gives). Lower mask.head_warmup below the step count, "
        "or train longer."
    )


# Bytes per α entry of a DAM_u search: α, its gradient and AdamW's two moments (fp32), and the
# per-step [L, H, n, n] sample with its soft value and the mask built from it.
DAM_U_BYTES_PER_ENTRY = 28
DAM_U_WARN_BYTES = 1 << 30


def check_dam_u_size(n: int, heads: int, layers: int, memory: int | None = None) -> None:
    """Refuse a DAM_u whose search would not fit in `memory` bytes (default: this machine's RAM);
    warn above DAM_U_WARN_BYTES. One α per (layer, head, i, j) grows as n²: at n = 4096 with 12
    heads it is 201 M α, where DAM_s has 49 k and a block DAM 196 k (tiles of 32)."""
    entries = layers * heads * n * n
    need = DAM_U_BYTES_PER_ENTRY * entries
    if need <= DAM_U_WARN_BYTES:
        return
    memory = memory or physical_memory()
    message = (
        f"mask=dam (DAM_u) at n={n} with {heads} heads × {layers} mask layer(s) learns "
        f"{entries / 1e6:.0f} M α: about {need / 2**30:.1f} GiB for α, its gradient, the "
        f"optimiser state and each step's sample (this machine has {memory / 2**30:.0f} GiB). "
        "At long n use mask=dam_s (one α per head and distance) or mask.structure=block (one α "
        "per model.block_size tile, which the block_sparse backend turns into speed)."
    )
    if need > memory:
        raise SparseBertError(message)
    warnings.warn(message, stacklevel=2)
