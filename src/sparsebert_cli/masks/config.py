"""Schema of the `mask` config group (torch-free: composing a config must stay instant)."""

from dataclasses import dataclass


@dataclass
class MaskConfig:
    # Pattern name: dense, no_diag, strided, fixed, longformer, logsparse, bigbird, star, window,
    # random (fixed patterns), dam (learnable, DAM_u / DAM_s) or from_run (a searched mask).
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
    structure: str = "unstructured"  # unstructured (DAM_u) | structured (DAM_s, Toeplitz)
    lam: float = 1e-4  # λ of the L1 penalty λ·‖M‖₁
    l1_norm: str = "sum"  # sum (as in the paper) | mean
    tau: float = 1.0  # Gumbel-sigmoid temperature τ
    tau_final: float | None = None  # anneal τ linearly to this over the search (None: constant)
    hard: bool = True  # hard straight-through: forward 0/1, gradients through the soft value
    init: float = 0.0  # initial α (0 -> keep probability 0.5)
    lr: float = 1e-2  # learning rate of α (own optimiser group, no weight decay)
    seq_len: int = 128  # n of a learnable mask (masks are cropped for shorter sequences)
    share_layers: bool = True  # one mask per head for all layers (reference code), or per layer
    trace_every: int = 10  # importance trace: σ(α) snapshot every K steps
    # --- a searched mask (name=from_run) ---
    from_run: str | None = None  # run dir of a search run, or "latest"


# The fields only DAM reads: two runs of a fixed pattern that differ in these ran the same mask.
DAM_FIELDS = (
    "structure", "lam", "l1_norm", "tau", "tau_final", "hard", "init", "lr", "seq_len",
    "share_layers", "trace_every",
)  # fmt: skip
