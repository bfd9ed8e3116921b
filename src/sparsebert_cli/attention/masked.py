"""Dense attention with a mask: the exact reference formula, and the same maths on PyTorch's SDPA kernel.

Both compute every query-key score and differ only in who does the work:
- `masked_attention` spells out A = softmax(QKᵀ·scaling + P + (1 − M)·(−c)), out = A V. It takes
  any mask, including a DAM sample (float, exactly 0/1 forward, straight-through gradients to α).
- `sdpa_attention` hands M to `F.scaled_dot_product_attention` (fused kernels, the fastest choice
  where sparsity cannot pay, e.g. short sequences or a dense mask) as an additive float mask
  [1 or B, 1 or H, n, n]: on CPU (torch 2.13) a 4-D float mask keeps the fused flash kernel, where a
  boolean or 3-D mask falls back to the unfused math path (about 8× slower at n = 128). The
  float mask and M's empty rows are derived once per mask (`SdpaMask`, kept by the model's
  `AttentionMask`, the one cache of what is derived from a mask), not per call. A mask whose
  heads are all alike (every fixed pattern but random and bigbird) gets one [1, 1, n, n] float
  mask that SDPA broadcasts over the heads, and its empty rows are found in one head: H times less
  memory and time for both (one more pass over M finds the heads alike).
Both apply the empty-row rule (masks/empty_rows.py): a query with no allowed key gets a zero output.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sparsebert_cli.masks.empty_rows import empty_query_rows, masked_softmax, warn_empty_rows

MASK_PENALTY = 10000.0  # c of the reference code: (1 − M)·(−c) is added before the softmax
SDPA_CACHE_BYTES = 64 * 2**20  # largest additive mask (one layer) kept between calls


def masked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    key_padding: torch.Tensor | None,
    scaling: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """The reference: query/key/value [B, H, n, d]; M bool or float 0/1 [H, n, n] or None (dense).

    key_padding: bool [B, n], True = padding, or None. A float M adds (1 − M)·(−c) to the scores,
    as the reference code does, so α gets c·∂L/∂score through the kept entries; a dropped entry's
    weight is e^(−c) = 0 in floating point, so the forward pass equals the boolean mask's.
    """
    probs = attention_probs(query, key, mask, key_padding, scaling)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, value)


def attention_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    key_padding: torch.Tensor | None,
    scaling: float,
) -> torch.Tensor:
    """A = softmax(QKᵀ·scaling + P + (1 − M)·(−c)): [B, H, n, n], rows of M's empty queries 0."""
    n = query.shape[-2]
    scores = torch.matmul(query, key.transpose(-1, -2)).mul_(scaling)  # [B, H, n, n]
    if mask is None:
        mask = torch.ones(1, n, n, dtype=torch.bool, device=query.device)
    if mask.dtype == torch.bool:
        return masked_softmax(scores, mask, key_padding)
    # A float M adds (M − 1)·c, the reference formula. For a hard sample (0/1) a dropped entry
    # is c below the kept ones: with scores less than c − 100 apart its weight underflows to
    # exactly 0, and so does its gradient, with no fill; only padding needs one. A query is
    # empty when no key has M > 0.5.
    scores = torch.add(scores, mask - 1, alpha=MASK_PENALTY)
    if key_padding is not None:
        scores.masked_fill_(key_padding[:, None, None, :], torch.finfo(scores.dtype).min)
    empty = empty_query_rows(mask.detach() > 0.5, key_padding)[..., None]
    probs = scores.softmax(dim=-1)
    return probs.masked_fill(empty, 0.0) if bool(empty.any()) else probs


def masked_score(dtype: torch.dtype) -> float:
    """The additive mask of a dropped entry: half the dtype's lowest, so score + mask stays finite
    (a row with no allowed key is uniform, then zeroed, never NaN) and its weight is exactly 0."""
    return torch.finfo(dtype).min / 2


@dataclass(frozen=True)
class SdpaMask:
    """What `sdpa_attention` derives from a boolean M [H, n, n], once per mask, dtype and device."""

    mask: torch.Tensor  # bool [H, n, n]: M
    dtype: torch.dtype  # the query dtype it was built for
    # bool [1 or H, n, n]: what the float mask is made of, M's first head when all heads are alike
    bias_mask: torch.Tensor
    # [1, 1 or H, n, n] in the query dtype: 0 where M allows, `masked_score` where not; None when
    # it is larger than SDPA_CACHE_BYTES (then built per call: long sequences, where it is cheap
    # next to the attention itself and too big to keep for every layer)
    bias: torch.Tensor | None
    empty: torch.Tensor | None  # bool [1, H, n, 1]: queries M leaves without a key; None if none
    first_key: torch.Tensor  # long [H, n]: each query's first allowed key (n if none)


def additive_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where `allowed` (bool), `masked_score` where not, in `dtype` on allowed's device: the
    one add that masks scores, for every backend."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, masked_score(dtype))


def any_in_pieces(mask: torch.Tensor, piece: int) -> torch.Tensor:
    """bool [..., m / piece]: whether each run of `piece` entries along the last dimension of
    `mask` (bool [..., m], m a multiple of piece) holds a True. Reads eight entries per 64-bit
    word where the layout allows: CPU's bool `any` reads a byte at a time, 3× slower on a
    12-head mask at n = 8192, where a layout reads M several times."""
    if piece % 8 == 0 and mask.is_contiguous() and mask.storage_offset() % 8 == 0:
        words = mask.view(torch.int64).view(*mask.shape[:-1], -1, piece // 8)
        return (words != 0).any(dim=-1)
    return mask.reshape(*mask.shape[:-1], -1, piece).any(dim=-1)


def build_sdpa_mask(mask: torch.Tensor, dtype: torch.dtype) -> SdpaMask:
    """The `SdpaMask` of M (bool [H, n, n]) for queries of `dtype`."""
    n = mask.shape[-1]
    alike = len(mask) == 1 or torch.equal(mask, mask[:1].expand_as(mask))
    bias_mask = mask[:1] if alike else mask
    small = bias_mask.numel() * torch.finfo(dtype).bits // 8 <= SDPA_CACHE_BYTES
    # Each query's first key and whether it has one: read from one head when all are alike.
    has_key = any_in_pieces(bias_mask, n)[..., 0]
    first_key = torch.where(has_key, bias_mask.to(torch.uint8).argmax(dim=-1), n)
    has_key, first_key = has_key.expand(mask.shape[:2]), first_key.expand(mask.shape[:2])
    empty = ~has_key[None, ..., None]
    return SdpaMask(
        mask=mask,
        dtype=dtype,
        bias_mask=bias_mask,
        bias=additive_bias(bias_mask, dtype)[None] if small else None,
        empty=empty if bool(empty.any()) else None,
        first_key=first_key,
    )


def _empty_with_padding(prepared: SdpaMask, key_padding: torch.Tensor) -> torch.Tensor:
    """bool [B, H, n, 1]: queries with no allowed key left once the padding keys are dropped."""
    n = key_padding.shape[-1]
    lengths = (~key_padding).sum(dim=-1)  # [B]
    positions = torch.arange(n, device=key_padding.device)
    if torch.equal(key_padding, positions >= lengths[:, None]):  # padding at the end: O(B·H·n)
        return (prepared.first_key[None] >= lengths[:, None, None])[..., None]
    allowed = prepared.mask & ~key_padding[:, None, None, :]  # any other padding: O(B·H·n²)
    return ~allowed.any(dim=-1, keepdim=True)


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    key_padding: torch.Tensor | None,
    scaling: float,
    dropout_p: float = 0.0,
    prepared: SdpaMask | None = None,
) -> torch.Tensor:
    """Masked attention on PyTorch's fused SDPA kernels; M bool [H, n, n] or None (dense).

    prepared: `build_sdpa_mask(M, query.dtype)`, which the caller keeps (the model's
    `AttentionMask` builds it once per mask and layer); without it, it is built for this call.
    """
    if mask is None and key_padding is None:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, scale=scaling)
    fill = masked_score(query.dtype)
    if mask is None:  # padding only: [B, 1, 1, n]; a sequence of nothing but padding is empty
        bias = additive_bias(~key_padding, query.dtype)[:, None, None, :]
        empty = key_padding.all(dim=-1)[:, None, None, None]  # [B, 1, 1, 1]
        empty = empty if bool(empty.any()) else None
    else:
        if prepared is None or prepared.dtype != query.dtype:
            prepared = build_sdpa_mask(mask, query.dtype)
        bias, empty = prepared.bias, prepared.empty
        if bias is None:
            bias = additive_bias(prepared.bias_mask, query.dtype)[None]
        if key_padding is not None:
            bias = bias.masked_fill(key_padding[:, None, None, :], fill)  # [B, 1 or H, n, n]
            empty = _empty_with_padding(prepared, key_padding)
            # Warn about the empty rows of real (not padding) queries only.
            if bool((empty & ~key_padding[:, None, :, None]).any()):
                warn_empty_rows()
            if not bool(empty.any()):
                empty = None
        elif empty is not None:
            warn_empty_rows()
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=bias, dropout_p=dropout_p, scale=scaling
    )
    # A query with no allowed key attended uniformly (every entry equally masked): zero it.
    return out if empty is None else out.masked_fill(empty, 0.0)
