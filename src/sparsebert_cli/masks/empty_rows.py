"""The empty-row rule: what a query with no allowed key gets (docs/paper.md §1).

`softmax(QKᵀ/√d + P + (1 − M)·(−c))` is undefined for a query whose every key is masked out by
M, by padding P, or by both (with −∞ it is NaN; with the reference code's c = 10000 it silently
attends uniformly to everything, padding included). The rule of this project: such a query gets
all-zero attention weights, hence a zero attention output; the residual connection still carries
the token. Never NaN, in the forward or the backward pass. The attention backends call
`empty_query_rows` to detect the rows (and warn once) and apply the rule; `masked_softmax` is the
rule applied to dense scores.
"""

import warnings
from collections.abc import Mapping

import torch

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import DAM_KINDS


class EmptyAttentionRowWarning(UserWarning):
    """Some query had no key to attend to; its attention output was set to zero."""


EMPTY_ROWS_MESSAGE = (
    "some attention query rows have no allowed key (in the mask, or once padding is masked too): "
    "their attention output is set to zero (the residual still carries the token). This is "
    "defined behaviour, not an error. `sparsebert masks --seq-len N` shows each named pattern's "
    "least row density at length N (0 % = a query with no key); a searched (DAM) mask can drop "
    "every key of a query too: its per-head "
    "sparsity is in the search run's artifacts/mask.json, and a smaller mask.lam keeps more keys."
)
_WARNED: dict = {}  # the warnings registry of this one warning: shown once per process


def warn_empty_rows() -> None:
    """Warn once per process that some query row was empty. Attributed to no source line: the
    place in the attention code that found the rows means nothing to the user."""
    warnings.warn_explicit(
        EMPTY_ROWS_MESSAGE, EmptyAttentionRowWarning, "sparsebert", 0, registry=_WARNED
    )


def empty_query_rows(mask: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
    """Query rows with no allowed key once M and padding are combined.

    mask: bool [H, n, n] or [B, H, n, n], True = may attend. key_padding: bool [B, n], True =
    this key is padding (cannot be attended), or None for no padding. Returns bool [B, H, n]
    ([H, n] without padding), True where the query has no key left. Warns once per process (per
    `warn_empty_rows`) when a real query's row is empty: a padding query's output is discarded,
    and a band mask leaves those far past the text without a key in every padded batch.
    """
    return _empty_rows(_allowed(mask, key_padding), key_padding)


def _allowed(mask: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
    return mask if key_padding is None else mask & ~key_padding[:, None, None, :]


def _empty_rows(allowed: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
    """`empty_query_rows` of M already combined with the padding (`_allowed`)."""
    empty = ~allowed.any(dim=-1)
    real_empty = empty if key_padding is None else empty & ~key_padding[:, None, :]
    if bool(real_empty.any()):
        warn_empty_rows()
    return empty


def masked_softmax(
    scores: torch.Tensor, mask: torch.Tensor, key_padding: torch.Tensor | None
) -> torch.Tensor:
    """Attention weights softmax over the allowed keys; an empty query row gets all zeros.

    scores: float [B, H, n, n] (QKᵀ/√d); mask and key_padding as in `empty_query_rows`.
    """
    allowed = _allowed(mask, key_padding)  # one n × n combination for the fill and the rows
    empty = _empty_rows(allowed, key_padding)
    # A finite fill keeps empty rows finite (uniform) before they are zeroed, so no NaN anywhere.
    filled = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return filled.softmax(dim=-1).masked_fill(empty[..., None], 0.0)


def _more_kept(search: Mapping) -> str:
    """What makes the search recorded in `search` (a mask.json: kind, params, target_sparsity)
    keep more entries: its target when it had one, else a target or λ; a block DAM's own tiles."""
    ways = []
    if search.get("kind") == DAM_KINDS["block"] and not search.get("params", {}).get(
        "keep_diagonal_blocks"
    ):
        ways.append("mask.keep_diagonal_blocks=true (each query keeps its own tile)")
    if search.get("target_sparsity") is not None:
        ways.append("a lower mask.target_sparsity")
    else:
        ways += ["a target sparsity (mask.lam=0 mask.target_sparsity=0.9)", "a smaller mask.lam"]
    return ", ".join(ways[:-1]) + " or " + ways[-1] if len(ways) > 1 else ways[0]


def empty_layers(mask: torch.Tensor) -> str | None:
    """Which layers of M (bool [L, H, n, n]; L = 1: shared by all) allow no entry at all, in
    words ("every layer", "layer(s) [1, 3]"), or None."""
    empty = [layer for layer in range(mask.shape[0]) if not bool(mask[layer].any())]
    if not empty:
        return None
    return "every layer" if len(empty) == mask.shape[0] else f"layer(s) {empty}"


def check_keeps_attention(
    mask: torch.Tensor, search: Mapping | None = None, pattern: str | None = None
) -> None:
    """Refuse a fixed mask M (bool [L, H, n, n]) to train with that allows nothing in some layer:
    that layer's attention would be zero for every token (an empty row is defined, a model whose
    layer never attends is a mistake: a search driven to 100 % sparsity). `search`: the mask.json
    of M's search; `pattern`: M is that fixed pattern (the advice names them)."""
    where = empty_layers(mask)
    if not where:
        return
    if pattern is not None:
        fix = (
            f"mask={pattern} keeps no entry there at n={mask.shape[-1]} with its parameters; "
            "raise them (mask.density for random), or use another mask."
        )
    else:
        fix = (
            "A search gets there when its L1 push outweighs the task's gradient (a large λ, or a "
            "model whose attention does not matter yet); search again with "
            f"{_more_kept(search or {})}, or use another mask."
        )
    raise SparseBertError(
        f"the attention mask allows no entry in {where} (100 % sparse there): the model would "
        f"attend to nothing. {fix}"
    )


def searched_mask_warning(mask: torch.Tensor, search: Mapping) -> str | None:
    """What to tell the user of a searched mask M (bool [L, H, n, n]) that leaves queries with no
    key (every run that uses it zeroes their attention; a layer that keeps nothing is refused by
    them), or None when every query keeps one. `search`: the mask.json the search writes."""
    empty = ~mask.any(dim=-1)  # [L, H, n]
    if not bool(empty.any()):
        return None
    heads = int(empty.all(dim=-1).sum())
    maps = "(layer, head)" if mask.shape[0] > 1 else "head (one mask for every layer)"
    layers = empty_layers(mask)
    used = (
        f"it allows no entry in {layers}, so the stages refuse to train with it"
        if layers
        else "the runs that use it zero their attention"
    )
    return (
        f"the searched mask leaves {float(empty.float().mean()):.1%} of the queries without a key "
        f"({heads} of {empty.shape[0] * empty.shape[1]} {maps} maps keep nothing); {used}. "
        f"More is kept with {_more_kept(search)}."
    )
