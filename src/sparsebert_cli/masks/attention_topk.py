"""The attention-mass top-k mask: the control a searched mask is compared with at equal sparsity.

Per head, the (query, key) entries on which a trained dense model puts the most attention,
averaged over training examples (attention/profile.AttentionMap; stages/search.py). Each query first keeps its
heaviest key (no query is left with nothing to attend to), then the heaviest remaining entries
fill the head up to round((1 − s)·n²) kept entries. `sparsebert search mask=attention_topk
mask.target_sparsity=s model.from=<pretrain run>` writes it as a search run's mask, which
`mask=from_run` then uses like a DAM mask.
"""

import torch


def top_mass_mask(mass: torch.Tensor, sparsity: float, share_layers: bool) -> torch.Tensor:
    """bool [L (1 with share_layers), H, n, n] from the mean attention `mass` [L, H, n, n]."""
    if share_layers:
        mass = mass.mean(0, keepdim=True)
    layers, heads, n, _ = mass.shape
    keep = max(n, round((1.0 - sparsity) * n * n))
    flat = mass.reshape(layers * heads, n, n).float()
    rows = torch.zeros_like(flat, dtype=torch.bool)
    rows.scatter_(-1, flat.argmax(-1, keepdim=True), True)
    score = flat.masked_fill(rows, float("inf")).reshape(layers * heads, n * n)
    kept = torch.zeros_like(score, dtype=torch.bool)
    kept.scatter_(-1, score.topk(keep, dim=-1).indices, True)
    return kept.reshape(layers, heads, n, n)
