"""Fixed attention patterns: pure functions of (n, heads, params) returning M as bool [heads, n, n].

M[h, i, j] is True when query i may attend to key j in head h. D = |i − j| is the distance and
"global g" means the first g tokens attend to all and are attended by all. Deterministic patterns
give the same mask to every head; the seeded random parts (`bigbird`, `random`) differ by head,
drawn in head order from one generator seeded with `seed` (so head h is the same for any `heads`).

Default parameters (conf/mask/*.yaml) reproduce the paper's sparsities at n = 128 (docs/paper.md §6).
This module may not touch the model: applying M is the attention backends' job.
"""

import difflib
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from sparsebert_cli.attention.diagonal import distance_index
from sparsebert_cli.errors import SparseBertError, require
from sparsebert_cli.masks.config import PATTERN_FIELDS, MaskConfig, physical_memory

# Bytes per (head, query, key) entry while a pattern is built: the bool mask, and a float score
# for the patterns that draw one (SCORED); plus 8 per (query, key) for the int64 distances.
# Builds below CHECKED_BYTES are not checked against the machine's memory.
SCORED, BUILD_BYTES_SHARED, CHECKED_BYTES = ("bigbird", "random"), 8, 2**30


def _add_global(mask: torch.Tensor, global_tokens: int) -> torch.Tensor:
    mask[..., :global_tokens, :] = True
    mask[..., :, :global_tokens] = True
    return mask


def _per_head(mask: torch.Tensor, heads: int) -> torch.Tensor:
    return mask.expand(heads, *mask.shape).clone()


def dense(n: int, heads: int) -> torch.Tensor:
    """Full attention: every query attends to every key (BERT)."""
    return torch.ones(heads, n, n, dtype=torch.bool)


def no_diag(n: int, heads: int) -> torch.Tensor:
    """M = 1 − I: no token attends to itself (the paper's second finding; the residual carries it)."""
    return _per_head(distance_index(n) != 0, heads)


def window(n: int, heads: int, *, window: int) -> torch.Tensor:
    """A band: keys with D ≤ window."""
    require(window >= 0, f"mask.window={window} is negative; set mask.window to 0 or more.")
    return _per_head(distance_index(n) <= window, heads)


def strided(n: int, heads: int, *, stride: int) -> torch.Tensor:
    """Sparse Transformer strided pattern, symmetric: D < l or D mod l = 0, with l = stride."""
    require(
        stride >= 1, f"mask.stride={stride}: the strided pattern needs l ≥ 1; set mask.stride=4."
    )
    d = distance_index(n)
    return _per_head((d < stride) | (d % stride == 0), heads)


def fixed(n: int, heads: int, *, stride: int, c: int) -> torch.Tensor:
    """Sparse Transformer fixed pattern: same block of size l, or key among the last c positions
    of its block (summary keys, attended by every query). Not symmetric."""
    require(stride >= 1, f"mask.stride={stride}: the fixed pattern needs l ≥ 1; set mask.stride=4.")
    require(
        0 <= c <= stride,
        f"mask.c={c} must lie in [0, mask.stride={stride}]: it counts the summary positions at the "
        "end of each block; set mask.c=1.",
    )
    positions = torch.arange(n)
    block = positions // stride
    same_block = block[:, None] == block[None, :]
    summary_key = (positions % stride >= stride - c)[None, :]
    return _per_head(same_block | summary_key, heads)


def longformer(n: int, heads: int, *, window: int, global_tokens: int) -> torch.Tensor:
    """Longformer: sliding window D ≤ window plus global tokens."""
    require(window >= 0, f"mask.window={window} is negative; set mask.window=6.")
    require(
        global_tokens >= 0, f"mask.global_tokens={global_tokens} is negative; set it to 1 ([CLS])."
    )
    return _per_head(_add_global(distance_index(n) <= window, global_tokens), heads)


def logsparse(n: int, heads: int) -> torch.Tensor:
    """LogSparse, symmetric: D ∈ {0, 1, 2, 4, 8, …} (zero or a power of two)."""
    d = distance_index(n)
    return _per_head((d & (d - 1)) == 0, heads)


def star(n: int, heads: int) -> torch.Tensor:
    """Star-Transformer: ring neighbours D ≤ 1 plus the first token ([CLS]) as the global relay."""
    return _per_head(_add_global(distance_index(n) <= 1, 1), heads)


def bigbird(
    n: int, heads: int, *, window: int, global_tokens: int, random_keys: int, seed: int
) -> torch.Tensor:
    """BigBird: window D ≤ window, global tokens, and `random_keys` extra keys per query.

    The random keys are drawn uniformly among the keys a query does not already have, so every
    non-global query gains exactly min(random_keys, free keys) keys; they differ by head.
    """
    require(random_keys >= 0, f"mask.random_keys={random_keys} is negative; set it to 4.")
    mask = longformer(n, heads, window=window, global_tokens=global_tokens)
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(heads, n, n, generator=generator).masked_fill(mask, -1.0)
    picked = scores.topk(min(random_keys, n), dim=-1, sorted=False).indices  # [heads, n, r]
    # Rows with fewer free keys than r pick some already-allowed keys (score −1): no change there.
    return mask.scatter(-1, picked, True)


def random(n: int, heads: int, *, density: float, seed: int) -> torch.Tensor:
    """Uniformly random mask keeping exactly round(density · n²) entries per head (seeded)."""
    require(
        0.0 <= density <= 1.0,
        f"mask.density={density} is not a fraction; set mask.density in [0, 1], e.g. 0.1.",
    )
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(heads, n * n, generator=generator)
    # Unsorted: the same entries (CPU and CUDA topk choose how to select from k and n alone;
    # `sorted` only reorders the selected ones), a third faster at n = 4096.
    kept = scores.topk(round(density * n * n), dim=-1, sorted=False).indices
    mask = torch.zeros(heads, n * n, dtype=torch.bool).scatter(-1, kept, True)
    return mask.view(heads, n, n)


PATTERNS: dict[str, Callable[..., torch.Tensor]] = {
    "dense": dense,
    "no_diag": no_diag,
    "strided": strided,
    "fixed": fixed,
    "longformer": longformer,
    "logsparse": logsparse,
    "bigbird": bigbird,
    "star": star,
    "window": window,
    "random": random,
}


def unknown_mask_error(name: str, known: list[str]) -> SparseBertError:
    """The error for a mask name nobody knows, with the nearest known names."""
    near = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    return SparseBertError(
        f"mask.name={name!r} is not a known mask.{hint} Choose one of: {', '.join(known)}."
    )


def pattern_params(cfg: MaskConfig | DictConfig) -> dict:
    """The parameters the pattern `cfg.name` reads, taken from the config (names = MaskConfig fields)."""
    if cfg.name not in PATTERNS:
        raise unknown_mask_error(cfg.name, list(PATTERNS))
    return {name: getattr(cfg, name) for name in PATTERN_FIELDS[cfg.name]}


def pattern_mask(cfg: MaskConfig | DictConfig, n: int, heads: int) -> torch.Tensor:
    """M of the fixed pattern `cfg.name` at length n: bool [heads, n, n]."""
    require(n >= 1, f"sequence length n={n} must be at least 1; set data.seq_len ≥ 1.")
    require(heads >= 1, f"heads={heads} must be at least 1; set model.num_heads ≥ 1.")
    need = n * n * ((1 + 4 * (cfg.name in SCORED)) * heads + BUILD_BYTES_SHARED)
    memory = physical_memory() if need > CHECKED_BYTES else need
    require(
        need <= memory,
        f"the {cfg.name} mask at n={n} with {heads} head{'s' if heads > 1 else ''} needs about "
        f"{need / 2**30:.0f} GiB to build (n × n entries per head), more than this machine's "
        f"{memory / 2**30:.0f} GiB; use a shorter sequence length.",
    )
    params = pattern_params(cfg)
    return PATTERNS[cfg.name](n, heads, **params)
