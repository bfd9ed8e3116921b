"""FlexAttention with a `BlockMask` built from M: PyTorch's fused block-sparse kernels.

The block mask marks each tile (query block I, key block J) of M as skipped, full (every entry
allowed: no per-element check) or partial (the `mask_mod` reads M and the padding). With padding
no tile is full, so the padding is always checked. A query with no allowed key gets a zero output,
as FlexAttention defines it (the empty-row rule). In torch 2.13 FlexAttention has no backward on
CPU, and without `torch.compile` it runs an unfused reference that materialises all scores.
"""

import functools
import math

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention


def _ordered(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [H, QB, KB] → (count [1, H, QB], key block indices [1, H, QB, KB], listed first)."""
    count = tiles.sum(dim=-1, dtype=torch.int32)
    indices = tiles.to(torch.int8).sort(dim=-1, descending=True, stable=True).indices
    return count[None], indices.to(torch.int32)[None]


def flex_block_mask(
    mask: torch.Tensor, key_padding: torch.Tensor | None, block_size: int
) -> BlockMask:
    """The BlockMask of M (bool [H, n, n]) and key_padding (bool [B, n], True = padding)."""
    heads, n, _ = mask.shape
    blocks = math.ceil(n / block_size)
    extra = blocks * block_size - n
    padded = F.pad(mask, (0, extra, 0, extra))  # mask_mod may see indices up to blocks·block_size
    tiles = padded.view(heads, blocks, block_size, blocks, block_size).transpose(2, 3)
    partial = tiles.any(dim=(3, 4))
    full = tiles.all(dim=(3, 4))
    if key_padding is None:

        def mask_mod(b, h, q, kv):
            return padded[h, q, kv]

    else:
        keep = ~F.pad(key_padding, (0, extra), value=True)
        full = torch.zeros_like(full)

        def mask_mod(b, h, q, kv):
            return padded[h, q, kv] & keep[b, kv]

    kv_count, kv_indices = _ordered(partial & ~full)
    full_count, full_indices = _ordered(full)
    return BlockMask.from_kv_blocks(
        kv_count,
        kv_indices,
        full_count,
        full_indices,
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod,
        seq_lengths=(n, n),
    )


@functools.cache
def compiled_flex_attention():
    """FlexAttention compiled into fused kernels (compiled once per process, per shape)."""
    return torch.compile(flex_attention, dynamic=False)


def flex_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    block_mask: BlockMask,
    scaling: float,
    compiled: bool = True,
) -> torch.Tensor:
    """query/key/value [B, H, n, d] → [B, H, n, d]; `compiled=False` runs the unfused reference."""
    attend = compiled_flex_attention() if compiled else flex_attention
    return attend(query, key, value, block_mask=block_mask, scale=scaling)
