"""Block-sparse attention: compute only the key blocks each query block needs.

The sequence is cut into blocks of `block_size` tokens. Query block I of head h needs key block J
when the mask M has any True entry in the tile (h, I, J). `block_layout` lists the active key
blocks of every query block once per mask. Query blocks with about the same number of active key
blocks form a group, padded to the group's longest row with masked dummy slots, so each group is
one batched matmul over [B, rows, block_size, K·block_size]: a Python loop runs over the few
groups, never over blocks, and a global token (a query block that needs every key block) does
not make the other rows dense. The backward pass is written out (`_BlockSparseAttention`), on
any device.

Everything derivable from M is built once, with the layout: the gather indices, an additive bias
per group (0 where M allows, a large negative number where it does not; one add over the scores
instead of a boolean fill, cast once per dtype) and the query rows M leaves without any key. Per
call the work is: one gather of Q (unless the group is every query block), K and V into
contiguous [B, R, K·block_size, d] tensors, Q Kᵀ, the bias, the padding (one broadcast fill, only
with padding), the softmax in the scores' dtype, P V. A query with no allowed key gets a zero
output (the empty-row rule, masks/empty_rows.py): its output rows are zeroed, never NaN. Work and
memory scale with the number of active tiles, i.e. with the block density.

A mask whose entries lie on a few diagonals (LogSparse: one diagonal per far tile) wastes most of
each tile; its layout carries a `DiagonalLayout` instead when that costs less (diagonal.py), and
the kernel computes the diagonals only. A DAM_s sample's layout comes from its kept distances
(`distance_layout`), not from the n × n mask.

A hard DAM sample (exactly 0/1) runs as the mask of its kept entries, and its values take the
gradient `masked_attention` gives the n × n float mask (1 − M)·(−c): c·∂L/∂score summed over
the entries each α covers, a block DAM's tiles or a DAM_s's distances. A dropped entry has
probability e^(−c) = 0, hence no gradient, so the computed entries are all that count.
"""

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sparsebert_cli.attention.diagonal import (
    DiagonalLayout,
    diagonal_attention,
    diagonal_layout,
    distance_diagonal_layout,
    mask_offsets,
)
from sparsebert_cli.attention.dropout import with_dropout
from sparsebert_cli.attention.masked import (
    MASK_PENALTY,
    additive_bias,
    any_in_pieces,
    masked_score,
)
from sparsebert_cli.masks.empty_rows import warn_empty_rows

# Each group costs one more round of kernel launches (gathers, matmuls, softmax, both ways),
# priced as this many more scored query·key entries: rows are grouped to minimise dummy slots plus
# groups at this price. Measured on 2 CPU cores (block size 32, head dim 64, batch × heads 4 to
# 64): one 64 × 64 tile's worth split bigbird at n = 2048 into 13 groups and ran it in 0.44 of the
# time of the previous rule (a row joined a group with ≥ 60 % of its widest row's blocks; four
# tiles' worth: 7 groups, 0.65), logsparse in 0.69, 10 % scattered tiles in 0.78, and was never
# more than 3 % slower on the banded patterns.
GROUP_COST = 2**12
# The kernel may list keys in pieces finer than the block (down to MIN_PIECE keys) when that
# costs at most PIECE_GAIN of whole blocks: a band of half-width w needs block_size + 2w keys per
# query block in fine pieces, against 3·block_size in whole blocks.
MIN_PIECE = 8
PIECE_GAIN = 0.9
# One entry of the diagonal kernel costs about as much as this many scored tile entries
# (fwd+bwd, 2 CPU cores, head dim 64: 2.1–4.0 over window, a DAM_s band and logsparse at
# n = 512–8192); a layout takes the diagonal kernel when that prices it below its tiles.
DIAGONAL_ENTRY_COST = 4


@dataclass(frozen=True)
class BlockGroup:
    """Query blocks with K active key blocks (of `piece` keys each) or a few less."""

    rows: torch.Tensor  # long [R]: flat query block index h·QB + I
    key_blocks: torch.Tensor  # long [R·K]: flat key block index h·(N/piece) + J of each slot
    allowed: torch.Tensor  # bool [R, block_size, K·piece]: M inside the gathered tiles
    # bool [R, block_size, 1]: rows of the group with no allowed key in M, or None if none
    empty: torch.Tensor | None = None
    _bias: dict = field(default_factory=dict, compare=False, repr=False)

    def bias(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """[R, block_size, K·piece]: 0 where M allows, `masked_score` where not (built once
        per dtype); None when every gathered entry is allowed."""
        key = (dtype, device)
        if key not in self._bias:
            if bool(self.allowed.all()):
                self._bias[key] = None
            else:
                self._bias[key] = additive_bias(self.allowed.to(device), dtype)
        return self._bias[key]


@dataclass
class BlockLayout:
    """Which key blocks each query block attends to, for one mask M [H, n, n].

    The kernel's `groups` are built on first use (`build`): `auto` decides from the block
    density and `diagonal` alone, and a search that runs a dense DAM sample `masked` would
    otherwise build them every step for nothing (a half-dense DAM_s sample: ~75 ms a layer at
    n = 2048).
    """

    block_size: int
    n: int
    heads: int
    query_blocks: int
    active_blocks: int  # tiles (h, I, J) where M has a True entry
    # What the kernel computes: query blocks of block_size against key pieces of `piece` keys
    # (a divisor of block_size: a band needs fewer keys per query block in finer pieces), in
    # `groups`; or M's diagonals (`diagonal`, and no groups) when they cost less than the tiles.
    piece: int
    build: Callable[[], list[BlockGroup]] | None = field(default=None, repr=False, compare=False)
    diagonal: DiagonalLayout | None = None
    # bool [H, n]: queries (< n) with no allowed key in M, or None if every query has one
    empty_queries: torch.Tensor | None = None
    idle_blocks: bool = False  # some query block has no active key block (its output is zero)
    _built: tuple[BlockGroup, ...] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def groups(self) -> tuple[BlockGroup, ...]:
        """The query blocks grouped by active key pieces; none with a `diagonal`."""
        if self._built is None:
            self._built = () if self.build is None else tuple(self.build())
            self.build = None  # it holds the mask it reads
        return self._built

    @property
    def block_density(self) -> float:
        """Fraction of the H·QB·QB tiles that are active (the cost relative to dense)."""
        return self.active_blocks / (self.heads * self.query_blocks**2)

    @property
    def scored_fraction(self) -> float:
        """Fraction of the H·n² entries the kernel scores: the gathered pieces' (finer than the
        tiles for a band) or M's diagonals'; below `block_density` when it takes either path."""
        if self.diagonal is not None:
            return len(self.diagonal.offsets) / self.n
        return sum(g.allowed.numel() for g in self.groups) / (self.heads * self.n**2)


def _group_counts(counts: list[int], slot: int) -> tuple[list[list[int]], int]:
    """Distinct active-piece counts (> 0) → groups of neighbouring counts, each padded to its
    largest, at the least cost (`slot` scored entries per slot, GROUP_COST per group); and that
    cost."""
    rows = Counter(c for c in counts if c > 0)
    distinct = sorted(rows, reverse=True)
    below = [0]  # below[i]: rows with the i largest counts
    for c in distinct:
        below.append(below[-1] + rows[c])
    # best[j] = (cost, start of the last group) of the cheapest grouping of distinct[:j]
    best = [(0, 0)]
    for j in range(1, len(distinct) + 1):
        best.append(
            min(
                (best[i][0] + GROUP_COST + slot * distinct[i] * (below[j] - below[i]), i)
                for i in range(j)
            )
        )
    groups, j = [], len(distinct)
    while j:
        i = best[j][1]
        groups.insert(0, distinct[i:j])
        j = i
    return groups, best[-1][0]


def _on_sequence(blocks: int, block_size: int, n: int, device: torch.device) -> torch.Tensor:
    """bool [blocks, block_size]: which positions of the blocks padding n are real (< n)."""
    return (torch.arange(blocks * block_size, device=device) < n).view(blocks, block_size)


def _active(padded: torch.Tensor, heads: int, block_size: int, piece: int) -> torch.Tensor:
    """bool [H·QB, N/piece]: query block (h, I) has an allowed key in key piece J."""
    size = padded.shape[-1]
    return (
        any_in_pieces(padded, piece).view(heads * (size // block_size), block_size, -1).any(dim=1)
    )


# content(rows [R], key pieces [R, K]) → bool [R, K, block_size, piece]: M inside those tiles
TileContent = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _groups(
    active: torch.Tensor,
    heads: int,
    block_size: int,
    piece: int,
    empty_rows: torch.Tensor,
    plan: list[list[int]],
    content: TileContent,
) -> list[BlockGroup]:
    """The groups of query blocks, one per list of active key piece counts in `plan`."""
    device = active.device
    pieces = active.shape[-1]
    blocks = active.shape[0] // heads
    counts = active.sum(dim=-1)
    # Per row: active key pieces first, in key order (the sort is stable), then inactive ones.
    order = active.to(torch.int8).sort(dim=-1, descending=True, stable=True).indices
    groups = []
    for members in plan:
        rows = torch.isin(counts, torch.tensor(members, device=device)).nonzero()[:, 0]
        width = members[0]
        key_piece = order[rows, :width]  # [R, K]
        real_slot = torch.arange(width, device=device) < counts[rows, None]
        inside = content(rows, key_piece) & real_slot[..., None, None]  # [R, K, bs, p]
        allowed = inside.transpose(1, 2).reshape(len(rows), block_size, width * piece)
        first_of_head = torch.div(rows, blocks, rounding_mode="floor") * pieces
        group_empty = empty_rows[rows, :, None]
        groups.append(
            BlockGroup(
                rows=rows,
                key_blocks=(first_of_head[:, None] + key_piece).reshape(-1),
                allowed=allowed,
                empty=group_empty if bool(group_empty.any()) else None,
            )
        )
    return groups


def _mask_content(padded: torch.Tensor, block_size: int, piece: int) -> TileContent:
    """M inside the tiles of query blocks and key pieces (padded to whole blocks)."""
    pieces = padded.shape[-1] // piece
    # tiles[h·QB + I, J, i, j] = M[h, I·bs + i, J·piece + j]
    tiles = padded.view(-1, block_size, pieces, piece).transpose(1, 2)
    return lambda rows, key_piece: tiles[rows[:, None], key_piece]


def block_layout(mask: torch.Tensor, block_size: int) -> BlockLayout:
    """The block index table of M (bool [H, n, n]); n need not be a multiple of block_size.

    `block_density` counts tiles of block_size; the kernel's `groups` list key pieces of the
    size (block_size, block_size / 2, … ≥ MIN_PIECE) that scores the fewest keys, or there is
    `diagonal` instead when M's diagonals cost less than those tiles.
    """
    heads, n, _ = mask.shape
    blocks = math.ceil(n / block_size)
    extra = blocks * block_size - n
    # keys and queries beyond n are never allowed (no copy without them: the groups' builder
    # keeps `padded` until the kernel first runs)
    padded = F.pad(mask, (0, extra, 0, extra)) if extra else mask.contiguous()
    # Real queries (< n) with no allowed key: their output is zero.
    real = _on_sequence(blocks, block_size, n, mask.device)
    has_key = any_in_pieces(padded, padded.shape[-1])
    empty_rows = ~has_key.view(heads * blocks, block_size) & real.repeat(heads, 1)

    def diagonal(most: float) -> DiagonalLayout | None:
        offsets = mask_offsets(mask, most)
        return None if offsets is None else diagonal_layout(mask, offsets)

    return _plan(
        heads, n, block_size, empty_rows,
        active=lambda piece: _active(padded, heads, block_size, piece),
        content=lambda piece: _mask_content(padded, block_size, piece),
        diagonal=diagonal,
    )  # fmt: skip


def distance_layout(kept: torch.Tensor, block_size: int) -> BlockLayout:
    """`block_layout` of the mask a DAM_s sample keeps (kept: bool [H, n], distance |i − j|),
    built from the distances — work per head and tile row or piece, plus the entries of the
    tiles the kernel computes — never from the n × n expansion (a search builds one per layer
    and step)."""
    heads, n = kept.shape
    device = kept.device
    blocks = math.ceil(n / block_size)
    # kept_below[h, d]: how many distances < d head h keeps
    kept_below = F.pad(kept.int().cumsum(dim=-1), (1, 0))
    real = _on_sequence(blocks, block_size, n, device)
    # A query i has a key iff some kept distance is ≤ max(i, n − 1 − i).
    positions = torch.arange(blocks * block_size, device=device)
    reach = torch.maximum(positions, n - 1 - positions).clamp(max=n - 1)
    empty_rows = (kept_below[:, reach + 1] == 0) & real.view(-1)
    empty_rows = empty_rows.view(heads * blocks, block_size)

    def active(piece: int) -> torch.Tensor:
        # The entries of tile (I, P) that lie on the sequence have i − j in [low, high], and
        # |i − j| takes every value between its least and largest there.
        first_query = torch.arange(blocks, device=device) * block_size
        last_query = (first_query + block_size).clamp(max=n) - 1
        first_key = torch.arange(blocks * block_size // piece, device=device) * piece
        last_key = (first_key + piece).clamp(max=n) - 1
        low = first_query[:, None] - last_key[None, :]
        high = last_query[:, None] - first_key[None, :]
        nearest = torch.where(low > 0, low, (-high).clamp(min=0)).clamp(max=n)
        farthest = torch.maximum(low.abs(), high.abs()).clamp(max=n - 1)
        on_sequence = (first_key < n)[None, :]
        between = kept_below[:, farthest + 1] - kept_below[:, nearest]  # [H, QB, N/piece]
        return ((between > 0) & on_sequence).view(heads * blocks, -1)

    def content(piece: int) -> TileContent:
        # A tile's entries depend only on its head and on the offset o = J·piece − I·block_size
        # of its keys from its queries: one table per head and offset, kept[|o + j − i|].
        first = (blocks - 1) * block_size  # the most negative offset is −first
        offsets = torch.arange(-first, blocks * block_size, piece, device=device)
        inside = torch.arange(block_size, device=device)
        distance = offsets[:, None, None] + inside[:piece] - inside[:, None]  # [O, bs, piece]
        table = kept[:, distance.abs_().clamp_(max=n - 1)]  # [H, O, bs, piece]
        real_key = real.view(-1, piece)

        def tiles(rows: torch.Tensor, key_piece: torch.Tensor) -> torch.Tensor:
            head, block = torch.div(rows, blocks, rounding_mode="floor"), rows % blocks
            offset = (key_piece * piece - (block * block_size)[:, None] + first) // piece
            on_sequence = real[block][:, None, :, None] & real_key[key_piece][:, :, None, :]
            return table[head[:, None], offset] & on_sequence

        return tiles

    def diagonal(most: float) -> DiagonalLayout | None:
        distances = kept.any(dim=0).nonzero()[:, 0]
        if most < 1 or 2 * len(distances) - bool(kept[:, 0].any()) > most:
            return None
        return distance_diagonal_layout(kept, distances)

    return _plan(heads, n, block_size, empty_rows, active, content, diagonal)


def _plan(
    heads: int,
    n: int,
    block_size: int,
    empty_rows: torch.Tensor,
    active: Callable[[int], torch.Tensor],
    content: Callable[[int], TileContent],
    diagonal: Callable[[float], DiagonalLayout | None],
) -> BlockLayout:
    """The layout of a mask given by its tiles: `active(piece)` bool [H·QB, N/piece] (query
    block, key piece has an allowed entry), `content(piece)` M inside chosen tiles, and
    `diagonal(most)` its layout on diagonals if there are at most `most`, else None."""
    blocks = math.ceil(n / block_size)
    whole = active(block_size)
    counts = whole.sum(dim=-1)
    plan, cost = _group_counts(counts.tolist(), block_size * block_size)
    # The key piece size: the one that costs least (a finer one must save ≥ 10 %).
    piece, piece_active, piece_plan = block_size, whole, plan
    candidate = block_size // 2
    while candidate >= MIN_PIECE and block_size % candidate == 0:
        candidate_active = active(candidate)
        candidate_plan, candidate_cost = _group_counts(
            candidate_active.sum(dim=-1).tolist(), block_size * candidate
        )
        if candidate_cost < PIECE_GAIN * cost:
            piece, piece_active, piece_plan, cost = (
                candidate, candidate_active, candidate_plan, candidate_cost
            )  # fmt: skip
        candidate //= 2
    diagonals = diagonal(cost / (DIAGONAL_ENTRY_COST * heads * blocks * block_size))
    if diagonals is not None:
        return _layout(block_size, n, heads, counts, empty_rows, piece, diagonal=diagonals)

    def build() -> list[BlockGroup]:
        return _groups(
            piece_active, heads, block_size, piece, empty_rows, piece_plan, content(piece)
        )

    return _layout(block_size, n, heads, counts, empty_rows, piece, build=build)


def _layout(block_size, n, heads, counts, empty_rows, piece, **kernel) -> BlockLayout:
    """The layout of query block rows with `counts` active key blocks; `kernel`: the builder of
    its groups or its diagonal."""
    blocks = len(counts) // heads
    empty_queries = empty_rows.view(heads, blocks * block_size)[:, :n]
    return BlockLayout(
        block_size=block_size,
        n=n,
        heads=heads,
        query_blocks=blocks,
        active_blocks=int(counts.sum()),
        piece=piece,
        empty_queries=empty_queries if bool(empty_queries.any()) else None,
        idle_blocks=bool((counts == 0).any()),
        **kernel,
    )


def tile_layout(tiles: torch.Tensor, block_size: int, n: int) -> BlockLayout:
    """The block index table of a mask made of whole tiles: tiles bool [H, QB, QB], tile (h, I,
    J) allowing queries I·bs… and keys J·bs… below n (a block DAM's sample). Built from the
    tiles alone, without the n × n mask: a search builds one per step."""
    heads, blocks, _ = tiles.shape
    real = _on_sequence(blocks, block_size, n, tiles.device)
    active = tiles.reshape(heads * blocks, blocks)
    counts = active.sum(dim=-1)
    empty_rows = (counts == 0)[:, None] & real.repeat(heads, 1)
    plan, _ = _group_counts(counts.tolist(), block_size * block_size)
    query_block = torch.arange(heads * blocks, device=tiles.device) % blocks

    def content(rows: torch.Tensor, key_block: torch.Tensor) -> torch.Tensor:
        return real[query_block[rows]][:, None, :, None] & real[key_block][:, :, None, :]

    def build() -> list[BlockGroup]:
        return _groups(active, heads, block_size, block_size, empty_rows, plan, content)

    return _layout(block_size, n, heads, counts, empty_rows, block_size, build=build)


def expand_tiles(tiles: torch.Tensor, block_size: int, n: int) -> torch.Tensor:
    """Values per tile [..., QB, KB] → the n × n mask [..., n, n] (each tile's value on its
    block_size × block_size entries, cropped to n). A broadcast, not an index: its gradient is
    a sum per tile, not index_put's scattered accumulate."""
    blocks = -(-n // block_size)
    tiles = tiles[..., :blocks, :blocks]
    size = blocks * block_size
    shape = (*tiles.shape[:-2], blocks, block_size, blocks, block_size)
    full = tiles[..., :, None, :, None].expand(shape)
    full = full.reshape(*tiles.shape[:-2], size, size)
    return full if size == n else full[..., :n, :n].contiguous()


def _scaled_scores(q: torch.Tensor, k: torch.Tensor, bias, scaling: float, batch: int):
    """Q Kᵀ·scaling + bias as [B·R, bs, K·bs]; q [B·R, bs, d], k [B·R, K·bs, d], bias [R, bs, K·bs]
    or None. One fused matmul when the bias broadcasts (B = 1), else a matmul and one add."""
    if bias is None:
        return _scaled_bmm(q, k.mT, scaling)
    if batch == 1:
        return torch.baddbmm(bias, q, k.mT, alpha=scaling)
    scores = torch.bmm(q, k.mT)
    view = scores.view(batch, -1, *scores.shape[1:])
    torch.add(bias, view, alpha=scaling, out=view)
    return scores


def _scaled_bmm(a: torch.Tensor, b: torch.Tensor, scaling: float, out=None) -> torch.Tensor:
    """a @ b · scaling in one matmul (into `out` when given)."""
    unused = a.new_empty(()).expand(len(a), a.shape[1], b.shape[2])  # beta = 0: never read
    return torch.baddbmm(unused, a, b, beta=0, alpha=scaling, out=out)


class _BlockSparseAttention(torch.autograd.Function):
    """Forward and backward over the active tiles, on query/key/value blocks [B, H·QB, bs, d].

    The backward is written out (rather than left to autograd) to keep every matmul on
    contiguous operands and the number of kernel launches per call small: each launch of a
    parallel kernel costs a thread wake-up, which dominates on a busy CPU.
    """

    @staticmethod
    def forward(ctx, query, key, value, layout, padded_keys, scaling, dropout_p, tiles, distances):
        batch, total, size, dim = query.shape
        fill = masked_score(query.dtype)
        saved, found = [], []
        single = len(layout.groups) == 1 and len(layout.groups[0].rows) == total
        piece = layout.piece
        key = key.view(batch, -1, piece, dim)
        value = value.view(batch, -1, piece, dim)
        if padded_keys is not None:
            padded_keys_q, padded_keys = padded_keys, padded_keys.view(batch, -1, piece)
        result = None
        if not single:
            make = query.new_zeros if layout.idle_blocks else query.new_empty
            result = make(batch, total, size, dim)
        for group in layout.groups:
            rows = len(group.rows)
            width = group.allowed.shape[-1]
            every_row = rows == total  # rows are sorted: the group is all of them, in order
            q = query if every_row else query.index_select(1, group.rows)  # [B, R, bs, d]
            q = q.reshape(batch * rows, size, dim)
            k = key.index_select(1, group.key_blocks).view(batch * rows, width, dim)
            v = value.index_select(1, group.key_blocks).view(batch * rows, width, dim)
            scores = _scaled_scores(q, k, group.bias(query.dtype, query.device), scaling, batch)
            empty = group.empty  # [R, bs, 1] or None
            if padded_keys is not None:
                dropped = padded_keys.index_select(1, group.key_blocks).view(batch, rows, 1, width)
                view = scores.view(batch, rows, size, width)
                view.masked_fill_(dropped, fill)
                # Every entry of an empty row is `fill` (score + fill rounds to fill); an
                # allowed score is far above fill / 2.
                empty = view.amax(dim=-1, keepdim=True) <= fill / 2  # [B, R, bs, 1]
                real = ~(padded_keys_q if every_row else padded_keys_q.index_select(1, group.rows))
                found.append((empty[..., 0] & real).any())
            probs = scores.softmax(dim=-1)
            drop, weights = with_dropout(probs, dropout_p)
            out = torch.bmm(weights, v).view(batch, rows, size, dim)
            if empty is not None:  # an empty row attended uniformly to masked keys: zero it
                out.masked_fill_(empty, 0.0)
            if single:
                result = out
            else:
                result.index_copy_(1, group.rows, out)
            if any(ctx.needs_input_grad[:3]) or any(ctx.needs_input_grad[7:]):  # inference: none
                saved.append((q, k, v, probs, drop, empty))  # weights: probs · drop
        if found and bool(torch.stack(found).any()):
            warn_empty_rows()
        ctx.layout, ctx.scaling, ctx.saved = layout, scaling, saved
        ctx.shape = query.shape
        return result

    @staticmethod
    def backward(ctx, grad):
        batch, total, size, dim = ctx.shape
        layout, scaling, piece = ctx.layout, ctx.scaling, ctx.layout.piece
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad = grad.contiguous()
        grad_q = grad_k = grad_v = None
        groups = layout.groups
        single = len(groups) == 1 and len(groups[0].rows) == total
        grid = None  # the tiles' gradient, when a block DAM sample needs one
        if ctx.needs_input_grad[7]:
            grid = grad.new_zeros(total * layout.query_blocks, dtype=torch.float32)
        per_distance = None  # the distances' gradient [H·n], when a DAM_s sample needs one
        if ctx.needs_input_grad[8]:
            per_distance = grad.new_zeros(layout.heads * layout.n, dtype=torch.float32)
        if need_q and not single:
            make = grad.new_zeros if layout.idle_blocks else grad.new_empty
            grad_q = make(batch, total, size, dim)
        grad_kv = None
        if need_k or need_v:  # key and value gradients share one buffer: one fill, one scatter
            grad_kv = grad.new_zeros(2, batch, total * size // piece, piece, dim)
        for group, (q, k, v, probs, drop, empty) in zip(groups, ctx.saved, strict=True):
            rows = len(group.rows)
            width = k.shape[1]
            g = grad if rows == total else grad.index_select(1, group.rows)  # [B, R, bs, d]
            if empty is not None:
                g = g.masked_fill(empty, 0.0)
            g = g.reshape(batch * rows, size, dim)
            grad_probs = torch.bmm(g, v.mT)  # [B·R, bs, K·piece]
            weights = probs
            if drop is not None:
                grad_probs.mul_(drop)
                weights = probs * drop
            # masked entries have probability 0, so their score gradient is 0
            grad_scores = torch.ops.aten._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            if grid is not None:
                _add_tile_gradient(grid, group, grad_scores, layout.query_blocks)
            if per_distance is not None:
                _add_distance_gradient(per_distance, group, grad_scores, layout)
            if need_q:
                dq = _scaled_bmm(grad_scores, k, scaling).view(batch, rows, size, dim)
                if single:
                    grad_q = dq
                else:
                    grad_q.index_copy_(1, group.rows, dq)
            if grad_kv is not None:
                dkv = grad.new_empty(2, batch * rows, width, dim)
                _scaled_bmm(grad_scores.mT, q, scaling, out=dkv[0])
                torch.bmm(weights.mT, g, out=dkv[1])
                _scatter_add(grad_kv, group.key_blocks, dkv.view(2, batch, -1, piece, dim))
        if need_k:
            grad_k = grad_kv[0].view(batch, total, size, dim)
        if need_v:
            grad_v = grad_kv[1].view(batch, total, size, dim)
        # fp32 sums; autograd casts them to the sample's dtype
        grad_tiles = grad_distances = None
        if grid is not None:
            grad_tiles = grid.view(-1, layout.query_blocks, layout.query_blocks) * MASK_PENALTY
        if per_distance is not None:
            grad_distances = per_distance.view(layout.heads, layout.n) * MASK_PENALTY
        return grad_q, grad_k, grad_v, None, None, None, None, grad_tiles, grad_distances


def _scatter_add(into: torch.Tensor, index: torch.Tensor, source: torch.Tensor) -> None:
    """into[:, :, index[r]] += source[:, :, r] over pieces [2, B, pieces, piece, d]. With one
    sequence, along the first dimension of 2-D slices: CPU's index_add_ runs that about twice as
    fast as along the inner dimension (1.1 against 0.5 ms for 800 pieces of 32 × 64, 2 cores)."""
    if into.shape[1] != 1:
        into.index_add_(2, index, source)
        return
    flat = into.view(2, into.shape[2], -1)  # [2, pieces, piece · d]
    rows = source.view(2, source.shape[2], -1)
    for half in range(2):  # keys, values
        flat[half].index_add_(0, index, rows[half])


def _add_tile_gradient(
    grid: torch.Tensor, group: BlockGroup, grad_scores: torch.Tensor, blocks: int
) -> None:
    """Add one group's score gradients [B·R, bs, K·bs], summed per tile, to grid [H·QB·QB]
    (flat tiles h, I, J of `tile_layout`'s whole-tile groups). Times MASK_PENALTY this is what
    `masked_attention` gives a float mask (1 − M)·(−c) expanded from the tiles: a dropped tile's
    entries have probability 0, hence gradient 0, so only the computed tiles contribute."""
    rows = len(group.rows)
    size = grad_scores.shape[1]
    sums = grad_scores.view(-1, rows, size, grad_scores.shape[-1] // size, size)
    sums = sums.float().sum(dim=(0, 2, 4))  # [R, K]
    key_blocks = group.key_blocks.view(rows, -1) - (group.rows[:, None] // blocks) * blocks
    grid.index_add_(0, (group.rows[:, None] * blocks + key_blocks).view(-1), sums.view(-1))


def _add_distance_gradient(
    grid: torch.Tensor, group: BlockGroup, grad_scores: torch.Tensor, layout: BlockLayout
) -> None:
    """Add one group's score gradients [B·R, bs, K·piece], summed per distance |i − j|, to grid
    [H·n] (head h, distance d). Entries off the sequence or outside M have gradient 0."""
    rows, size, piece, n = len(group.rows), layout.block_size, layout.piece, layout.n
    sums = grad_scores.view(-1, rows, size, grad_scores.shape[-1]).float().sum(dim=0)
    blocks = layout.query_blocks
    pieces = blocks * size // piece
    # int32 (index_add_ takes it): one index per scored entry, built in place
    inside = torch.arange(size, device=sums.device, dtype=torch.int32)
    query = (group.rows % blocks).int()[:, None] * size + inside  # [R, bs]
    key = (group.key_blocks.view(rows, -1) % pieces).int()[..., None] * piece + inside[:piece]
    index = (key.view(rows, 1, -1) - query[..., None]).abs_().clamp_(max=n - 1)  # distance
    index += (torch.div(group.rows, blocks, rounding_mode="floor").int() * n)[:, None, None]
    grid.index_add_(0, index.view(-1), sums.view(-1))


def block_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: BlockLayout,
    key_padding: torch.Tensor | None,
    scaling: float,
    dropout_p: float = 0.0,
    tiles: torch.Tensor | None = None,
    distances: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(Q Kᵀ·scaling masked by M and padding) V over the active tiles only.

    query/key/value: [B, H, n, d]; key_padding: bool [B, n], True = padding, or None.
    Returns [B, H, n, d]; equals dense masked attention wherever M allows. A hard DAM sample
    receives the gradient `masked_attention` would give its n × n expansion: tiles, a block
    DAM's [H, QB, QB] (`layout` = `tile_layout` of it), or distances, a DAM_s's [H, n]
    (`layout` = `distance_layout` of its kept distances).
    """
    if query.dim() != 4 or (layout.heads, layout.n) != (query.shape[1], query.shape[2]):
        raise ValueError(
            f"the layout is for {layout.heads} heads at n = {layout.n}, the query is "
            f"{list(query.shape)} [B, H, n, d]: build the layout from a mask [H, n, n] of the "
            "inputs' heads and length (a mask shared by all heads: mask.expand(H, n, n))"
        )
    if tiles is not None and (layout.diagonal is not None or layout.piece != layout.block_size):
        raise ValueError("tiles take their gradient from whole-tile groups: use tile_layout")
    if distances is not None and (tiles is not None or distances.shape != (layout.heads, layout.n)):
        raise ValueError(f"distances must be [heads, n] = [{layout.heads}, {layout.n}], alone")
    if layout.diagonal is not None:
        return diagonal_attention(
            query, key, value, layout.diagonal, key_padding, scaling, dropout_p, distances
        )
    batch, heads, n, dim = query.shape
    size, total = layout.block_size, heads * layout.query_blocks
    extra = layout.query_blocks * size - n
    if extra:
        query, key, value = (F.pad(x, (0, 0, 0, extra)) for x in (query, key, value))
    blocks = [x.reshape(batch, total, size, dim) for x in (query, key, value)]
    padded_keys = None
    if key_padding is not None:
        padding = F.pad(key_padding, (0, extra), value=True)  # [B, N]
        # a copy per head (with one query block per head, reshape would keep a stride-0 view
        # that the kernel cannot view in key pieces)
        padded_keys = padding[:, None].repeat(1, heads, 1).view(batch, total, size)
        if layout.empty_queries is not None and bool(
            (layout.empty_queries & ~key_padding[:, None, :]).any()
        ):
            warn_empty_rows()
    elif layout.empty_queries is not None:
        warn_empty_rows()
    out = _BlockSparseAttention.apply(
        *blocks, layout, padded_keys, scaling, dropout_p, tiles, distances
    )
    return out.view(batch, heads, -1, dim)[:, :, :n]
