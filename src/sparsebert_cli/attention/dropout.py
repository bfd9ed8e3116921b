"""Attention dropout of the sparse kernels: a scaled keep mask from 16 random bits per entry.

`torch.native_dropout` draws one Bernoulli sample per entry, and multiplying by its bool mask takes
a slow type-promoting path on CPU. For the probabilities of a 10 % block mask at n = 2048 (8 heads,
2 cores) that was about twice the time of the kernel's whole dropout here: four entries share one
64-bit draw of the same seeded generator (a seed still fixes the draw), and the mask is a float
multiplier. An entry is dropped when its 16 bits, read as a signed number, fall below
round(p · 2¹⁶) − 2¹⁵: the probability is p rounded to a multiple of 2⁻¹⁶ (0.1 → 0.100006), and a
kept entry is scaled by the inverse of the rounded keep probability, so the expectation of every
weight is exactly its probability.
"""

import torch

LEVELS = 2**16  # the values of an entry's random bits


def dropout_multiplier(like: torch.Tensor, p: float) -> torch.Tensor:
    """Shaped and typed like `like`: 0 where an entry is dropped (probability p rounded to
    2⁻¹⁶), the inverse of the keep probability where it is kept. The dropout of x is x · this,
    and so is the gradient through it."""
    count = like.numel()
    # 64 uniform bits per word (random_ from the least int64 on): four entries' 16-bit lanes
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=like.device)
    lanes = words.random_(torch.iinfo(torch.int64).min, None).view(torch.int16)
    dropped = min(round(p * LEVELS), LEVELS - 1)  # never every value
    keep = lanes[:count].view(like.shape) >= dropped - LEVELS // 2
    return keep.to(like.dtype).mul_(LEVELS / (LEVELS - dropped))


def with_dropout(probs: torch.Tensor, p: float) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The dropout multiplier of attention probabilities (None when p = 0; the backward pass
    needs it) and the probabilities it leaves: `probs` · multiplier."""
    if p <= 0:
        return None, probs
    drop = dropout_multiplier(probs, p)
    return drop, probs * drop
