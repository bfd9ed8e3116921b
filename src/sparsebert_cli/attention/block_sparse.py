"""Block-sparse attention: compute only the key blocks each query block needs.

The sequence is cut into blocks of `block_size` tokens. Query block I of head h needs key block J
when the mask M has any True entry in the tile (h, I, J). `block_layout` lists the active key
blocks of every query block once per mask. Query blocks with about the same number of active key
blocks form a group, padded to the group's longest row with masked dummy slots, so each group is
one batched matmul over [B, rows, block_size, K·block_size]: a Python loop runs over the few
groups, never over blocks, and a global token (a query block that needs every key block) does
not make the other rows dense. Autograd gives the backward pass on any device. Inside the active
tiles the element mask M and the padding are applied exactly; a query with no allowed key gets a
zero output (the empty-row rule, masks/empty_rows.py). Work and memory scale with the number of
active tiles, i.e. with the block density.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sparsebert_cli.masks.empty_rows import empty_query_rows

# A row joins a group when it has at least this fraction of the group's longest row's blocks
# (at most 40 % of a group's tiles are dummy slots): a band's shorter edge rows (2 blocks of 3)
# stay in the one group, a global token's row (all blocks) gets its own.
GROUP_FILL = 0.6


@dataclass(frozen=True)
class BlockGroup:
    """Query blocks with K active key blocks or a few less."""

    rows: torch.Tensor  # long [R]: flat query block index h·QB + I
    key_blocks: torch.Tensor  # long [R·K]: flat key block index h·QB + J of each row's K slots
    allowed: torch.Tensor  # bool [R, block_size, K·block_size]: M inside the gathered tiles


@dataclass(frozen=True)
class BlockLayout:
    """Which key blocks each query block attends to, for one mask M [H, n, n]."""

    block_size: int
    n: int
    heads: int
    query_blocks: int
    active_blocks: int  # tiles (h, I, J) where M has a True entry
    groups: tuple[BlockGroup, ...]
    # long [H·QB]: where each query block's output is in the groups' outputs concatenated
    # (followed by one zero block, the output of query blocks with no active key block)
    output_index: torch.Tensor

    @property
    def block_density(self) -> float:
        """Fraction of the H·QB·QB tiles that are active (the cost relative to dense)."""
        return self.active_blocks / (self.heads * self.query_blocks**2)


def _group_counts(counts: list[int]) -> list[list[int]]:
    """Distinct active-block counts (> 0) → groups, each within GROUP_FILL of its largest."""
    remaining = sorted({c for c in counts if c > 0}, reverse=True)
    groups = []
    while remaining:
        members = [c for c in remaining if c >= GROUP_FILL * remaining[0]]
        groups.append(members)
        remaining = remaining[len(members) :]
    return groups


def block_layout(mask: torch.Tensor, block_size: int) -> BlockLayout:
    """The block index table of M (bool [H, n, n]); n need not be a multiple of block_size."""
    heads, n, _ = mask.shape
    blocks = math.ceil(n / block_size)
    extra = blocks * block_size - n
    padded = F.pad(mask, (0, extra, 0, extra))  # keys and queries beyond n are never allowed
    # tiles[h·QB + I, J, i, j] = M[h, I·bs + i, J·bs + j]
    tiles = padded.view(heads * blocks, block_size, blocks, block_size).transpose(1, 2)
    active = tiles.any(dim=(2, 3))  # [H·QB, QB]
    counts = active.sum(dim=-1)
    # Per row: active key blocks first, in key order (the sort is stable), then inactive ones.
    order = active.to(torch.int8).sort(dim=-1, descending=True, stable=True).indices
    groups = []
    output_index = torch.full((heads * blocks,), int((counts > 0).sum()), device=mask.device)
    done = 0
    for members in _group_counts(counts.tolist()):
        rows = torch.isin(counts, torch.tensor(members, device=mask.device)).nonzero()[:, 0]
        width = members[0]
        key_block = order[rows, :width]  # [R, K]
        real = torch.arange(width, device=mask.device) < counts[rows, None]
        inside = tiles[rows[:, None], key_block] & real[..., None, None]  # [R, K, bs, bs]
        allowed = inside.transpose(1, 2).reshape(len(rows), block_size, width * block_size)
        first_of_head = torch.div(rows, blocks, rounding_mode="floor") * blocks
        key_blocks = (first_of_head[:, None] + key_block).reshape(-1)
        groups.append(BlockGroup(rows=rows, key_blocks=key_blocks, allowed=allowed))
        output_index[rows] = torch.arange(done, done + len(rows), device=mask.device)
        done += len(rows)
    return BlockLayout(
        block_size=block_size,
        n=n,
        heads=heads,
        query_blocks=blocks,
        active_blocks=int(counts.sum()),
        groups=tuple(groups),
        output_index=output_index,
    )


def block_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: BlockLayout,
    key_padding: torch.Tensor | None,
    scaling: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(Q Kᵀ·scaling masked by M and padding) V over the active tiles only.

    query/key/value: [B, H, n, d]; key_padding: bool [B, n], True = padding, or None.
    Returns [B, H, n, d]; equals dense masked attention wherever M allows.
    """
    batch, heads, n, dim = query.shape
    size, total = layout.block_size, heads * layout.query_blocks
    extra = layout.query_blocks * size - n
    if extra:
        query, key, value = (F.pad(x, (0, 0, 0, extra)) for x in (query, key, value))
    query_blocks = (query * scaling).reshape(batch, total, size, dim)
    key_blocks = key.reshape(batch, total, size, dim)
    value_blocks = value.reshape(batch, total, size, dim)
    keep = None
    if key_padding is not None:
        keep = ~F.pad(key_padding, (0, extra), value=True)  # [B, N]
        keep = keep[:, None].expand(-1, heads, -1).reshape(batch, total, size)
    has_key = torch.zeros(batch, total, size, dtype=torch.bool, device=query.device)
    outputs = []
    for group in layout.groups:
        rows = len(group.rows)
        width = group.allowed.shape[-1]
        every_row = rows == total  # rows are sorted: the group is all of them, in order
        q = query_blocks if every_row else query_blocks.index_select(1, group.rows)  # [B, R, bs, d]
        k = key_blocks.index_select(1, group.key_blocks).view(batch, rows, width, dim)
        v = value_blocks.index_select(1, group.key_blocks).view(batch, rows, width, dim)
        scores = torch.matmul(q, k.transpose(-1, -2))  # [B, R, bs, K·bs]
        allowed = group.allowed
        if keep is not None:
            allowed = allowed & keep.index_select(1, group.key_blocks).view(batch, rows, 1, width)
        row_has_key = allowed.any(dim=-1)  # [(B,) R, bs]
        has_key[:, group.rows] = row_has_key
        # A finite fill keeps empty rows finite (uniform) until they are zeroed: no NaN anywhere.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1).masked_fill(~row_has_key[..., None], 0.0)
        if dropout_p > 0:
            probs = F.dropout(probs, p=dropout_p)
        outputs.append(torch.matmul(probs, v))  # [B, R, bs, d]
    # Warn about real queries that have no key left: not the rows beyond n, nor padding queries.
    checked = has_key.view(batch, heads, -1)[..., :n]
    if key_padding is not None:
        checked = checked | key_padding[:, None, :]
    empty_query_rows(checked[..., None], None)
    if len(outputs) == 1 and len(layout.groups[0].rows) == total:
        out = outputs[0]  # one group of every query block, in order
    else:
        outputs.append(query_blocks.new_zeros(batch, 1, size, dim))
        out = torch.cat(outputs, dim=1).index_select(1, layout.output_index)
    return out.view(batch, heads, -1, dim)[:, :, :n]
