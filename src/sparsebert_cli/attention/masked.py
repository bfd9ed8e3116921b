"""Dense attention with a mask: the exact reference formula, and the same maths on PyTorch's SDPA kernel.

Both compute every query-key score and differ only in who does the work:
- `masked_attention` spells out A = softmax(QKᵀ·scaling + P + (1 − M)·(−c)), out = A V. It takes
  any mask, including a DAM sample (float, exactly 0/1 forward, straight-through gradients to α).
- `sdpa_attention` hands a boolean mask to `F.scaled_dot_product_attention` (fused kernels, the
  fastest choice where sparsity cannot pay, e.g. short sequences or a dense mask).
Both apply the empty-row rule (masks/empty_rows.py): a query with no allowed key gets a zero output.
"""

import torch
import torch.nn.functional as F

from sparsebert_cli.masks.empty_rows import empty_query_rows, masked_softmax

MASK_PENALTY = 10000.0  # c of the reference code: (1 − M)·(−c) is added before the softmax


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
    n = query.shape[-2]
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # [B, H, n, n]
    if mask is None:
        mask = torch.ones(1, n, n, dtype=torch.bool, device=query.device)
    elif mask.dtype != torch.bool:
        scores = scores + (1.0 - mask) * -MASK_PENALTY
        mask = mask.detach() > 0.5
    probs = masked_softmax(scores, mask, key_padding)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, value)


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    key_padding: torch.Tensor | None,
    scaling: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Masked attention on PyTorch's fused SDPA kernels; M bool [H, n, n] or None (dense)."""
    if mask is None and key_padding is None:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, scale=scaling)
    allowed = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=query.device)
    if mask is not None:
        allowed = allowed & mask
    if key_padding is not None:
        allowed = allowed & ~key_padding[:, None, None, :]
    empty = ~allowed.any(dim=-1, keepdim=True)
    if mask is not None:  # warn about the empty rows of real (not padding) queries
        real_rows = allowed if key_padding is None else allowed | key_padding[:, None, :, None]
        empty_query_rows(real_rows, None)
    # Let empty rows attend to everything, then zero them: the rule on every device and kernel.
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=allowed | empty, dropout_p=dropout_p, scale=scaling
    )
    return out.masked_fill(empty, 0.0)
