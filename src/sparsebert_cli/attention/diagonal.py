"""Diagonal attention: for masks whose allowed entries lie on a few diagonals (LogSparse).

Entry (i, j) of M lies on diagonal D = j − i. A mask such as LogSparse (D ∈ {0, ±1, ±2, ±4, …})
has only m ≈ 2·log₂ n diagonals, but each crosses a fresh tile every block_size rows, so the tile
kernel (block_sparse.py) scores block_size keys per tile to use one: 27 keys per query become
~480 scored at n = 8192. Here each diagonal is one shifted row-wise product over all heads at
once: score_D[i] = q_i · k_(i+D), so the work is m·n·d per head, exactly what M allows.

The layout keeps the distinct diagonals and an additive bias [m, H, n] (0 where M allows, the
`masked_score` fill where not, or where i + D falls off the sequence), so any mask on few
diagonals is exact, one head's diagonals differing from another's included. The softmax runs
over the m diagonals; a query with no allowed key gets a zero output (the empty-row rule,
masks/empty_rows.py). The backward pass is written out: four shifted multiply-adds per diagonal
and the softmax's, no [n, m, d] gathers.

A DAM_s sample (one 0/1 value per head and distance |i − j|, hard) is a mask on diagonals: the
kernel runs it from its layout and gives each distance the gradient `masked_attention` gives the
n × n expansion, c·∂L/∂score summed over the distance's two diagonals.
"""

from dataclasses import dataclass, field

import torch
from torch.autograd.function import once_differentiable

from sparsebert_cli.attention.dropout import with_dropout
from sparsebert_cli.attention.masked import MASK_PENALTY, additive_bias, masked_score
from sparsebert_cli.masks.empty_rows import warn_empty_rows

OFFSET_CHUNK = 2**22  # entries of M read at a time while listing its diagonals


@dataclass(frozen=True)
class DiagonalLayout:
    """The diagonals D = j − i on which M [H, n, n] allows some entry."""

    offsets: tuple[int, ...]
    allowed: torch.Tensor  # bool [m, H, n]: M[h, i, i + D_j] (False off the sequence)
    empty_queries: torch.Tensor | None  # bool [H, n]: queries with no allowed key, or None
    _bias: dict = field(default_factory=dict, compare=False, repr=False)

    def bias(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """[m, 1, H, n]: 0 where M allows, `masked_score` where not (built once per dtype and
        device)."""
        key = (dtype, device)
        if key not in self._bias:
            self._bias[key] = additive_bias(self.allowed.to(device), dtype)[:, None]
        return self._bias[key]


def distance_index(n: int, device: torch.device | None = None) -> torch.Tensor:
    """D[i, j] = |i − j| as a long [n, n] tensor."""
    positions = torch.arange(n, device=device)
    return (positions[:, None] - positions[None, :]).abs()


def expand_distances(values: torch.Tensor, n: int) -> torch.Tensor:
    """Values per distance [..., n or more] → the symmetric Toeplitz mask [..., n, n] (entry
    (i, j) takes the value of distance |i − j|)."""
    if values.requires_grad:
        return _ExpandDistances.apply(values, n)
    return values[..., distance_index(n, values.device)]


# Entries of the skewing buffer `distance_sums` fills at a time (at least one matrix: 2n² values,
# 128 MiB of fp32 at n = 4096, beside the gradient itself).
SUM_CHUNK = 2**22


def distance_sums(grid: torch.Tensor) -> torch.Tensor:
    """[..., n, n] → [..., n]: the sum of each distance's entries (|i − j| = d), in fp32 (or
    the grid's dtype if wider).

    Skewed, not scattered: row i of the grid flipped and padded to 2n, read back with a row
    stride of 2n − 1, puts diagonal D = j − i in column n − 1 − D, so one column sum per
    diagonal adds them up (index_put's accumulate, the indexing's own backward, took 4–5×
    longer at n = 2048).
    """
    *lead, n, _ = grid.shape
    matrices = grid.reshape(-1, n, n)
    dtype = torch.promote_types(grid.dtype, torch.float32)
    diagonals = torch.empty(len(matrices), 2 * n - 1, dtype=dtype, device=grid.device)
    step = max(1, SUM_CHUNK // (2 * n * n))
    buffer = torch.zeros(min(step, len(matrices)), n, 2 * n, dtype=dtype, device=grid.device)
    for start in range(0, len(matrices), step):
        chunk = matrices[start : start + step]
        padded = buffer[: len(chunk)]
        padded[..., :n] = chunk.flip(-1)
        skewed = padded.view(len(chunk), -1)[:, : (2 * n - 1) * n].view(len(chunk), n, -1)
        torch.sum(skewed, dim=1, out=diagonals[start : start + len(chunk)])
    # column n − 1 − d holds diagonal +d, column n − 1 + d diagonal −d
    sums = diagonals[:, :n].flip(-1) + diagonals[:, n - 1 :]
    sums[:, 0] = diagonals[:, n - 1]
    return sums.view(*lead, n)


class _ExpandDistances(torch.autograd.Function):
    """`expand_distances` with its gradient summed per distance by `distance_sums`."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, n: int) -> torch.Tensor:
        ctx.length, ctx.dtype = values.shape[-1], values.dtype
        return values[..., distance_index(n, values.device)]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        sums = distance_sums(grad).to(ctx.dtype)
        return torch.nn.functional.pad(sums, (0, ctx.length - sums.shape[-1])), None


def mask_offsets(mask: torch.Tensor, most: float) -> torch.Tensor | None:
    """The distinct diagonals D = j − i of M's allowed entries (bool [H, n, n]), sorted (long
    [m]); None when there are more than `most`. Rows are read a chunk at a time (about
    OFFSET_CHUNK entries of M), so a mask on many diagonals stops early and memory stays small."""
    heads, n, _ = mask.shape
    if most < 1:
        return None
    found = torch.zeros(2 * n - 1, dtype=torch.bool, device=mask.device)
    chunk = max(1, OFFSET_CHUNK // (heads * n))
    for start in range(0, n, chunk):
        _, rows, cols = mask[:, start : start + chunk].nonzero(as_tuple=True)
        found[cols - rows - start + n - 1] = True
        if int(found.sum()) > most:
            return None
    return found.nonzero()[:, 0] - (n - 1)


def diagonal_layout(mask: torch.Tensor, offsets: torch.Tensor) -> DiagonalLayout:
    """The layout of M (bool [H, n, n]) over its diagonals `offsets` (from `mask_offsets`)."""
    rows, cols, inside = _diagonals(offsets, mask.shape[-1])
    return _diagonal_layout(offsets, mask[:, rows[None], cols.clamp(0, len(rows) - 1)] & inside)


def distance_diagonal_layout(kept: torch.Tensor, distances: torch.Tensor) -> DiagonalLayout:
    """The layout of a DAM_s sample (kept: bool [H, n] per distance |i − j|) over the two
    diagonals ±d of each distance d in `distances` (long, ascending: those any head keeps)."""
    offsets = torch.cat([-distances[distances > 0].flip(0), distances])
    _, _, inside = _diagonals(offsets, kept.shape[-1])
    return _diagonal_layout(offsets, kept[:, offsets.abs(), None] & inside)


def _diagonals(offsets: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """Queries i [n], keys i + D [m, n] of each diagonal D, and which keys are on the sequence."""
    rows = torch.arange(n, device=offsets.device)
    cols = rows[None] + offsets[:, None]
    return rows, cols, (cols >= 0) & (cols < n)


def _diagonal_layout(offsets: torch.Tensor, allowed: torch.Tensor) -> DiagonalLayout:
    """The layout from `allowed` [H, m, n] (M[h, i, i + D_j], False off the sequence)."""
    allowed = allowed.transpose(0, 1).contiguous()
    empty = ~allowed.any(dim=0)
    return DiagonalLayout(
        offsets=tuple(offsets.tolist()),
        allowed=allowed,
        empty_queries=empty if bool(empty.any()) else None,
    )


def _spans(offsets: tuple[int, ...], n: int) -> list[tuple[slice, slice]]:
    """Per diagonal D: (the queries i whose key i + D is on the sequence, those keys)."""
    return [(slice(max(0, -d), min(n, n - d)), slice(max(0, d), min(n, n + d))) for d in offsets]


class _DiagonalAttention(torch.autograd.Function):
    """softmax over the diagonals of (q_i · k_(i+D))·scaling + bias, weights times v_(i+D).

    query/key/value [B, H, n, d] contiguous; scores and probabilities are [m, B, H, n].
    `distances` (a DAM_s sample [H, n], or None) only takes a gradient: its kept distances are
    the layout's diagonals.
    """

    @staticmethod
    def forward(ctx, query, key, value, layout, key_padding, scaling, dropout_p, distances):
        batch, heads, n, dim = query.shape
        spans = _spans(layout.offsets, n)
        fill = masked_score(query.dtype)
        scores = layout.bias(query.dtype, query.device).expand(-1, batch, -1, -1).clone()
        for j, (rows, keys) in enumerate(spans):
            product = torch.linalg.vecdot(query[:, :, rows], key[:, :, keys])
            scores[j, :, :, rows].add_(product, alpha=scaling)
        empty = layout.empty_queries  # [H, n] or None
        if empty is not None:
            empty = empty.to(query.device)
        if key_padding is not None:  # [B, n]: the key i + D of each diagonal is padding
            shifted = torch.ones(len(spans), batch, n, dtype=torch.bool, device=query.device)
            for j, (rows, keys) in enumerate(spans):
                shifted[j, :, rows] = key_padding[:, keys]
            scores.masked_fill_(shifted[:, :, None], fill)
            # every entry of an empty row is `fill`; an allowed score is far above fill / 2
            empty = scores.amax(dim=0) <= fill / 2  # [B, H, n]
            if bool((empty & ~key_padding[:, None]).any()):
                warn_empty_rows()
        elif empty is not None:
            warn_empty_rows()
        probs = scores.softmax(dim=0)
        drop, weights = with_dropout(probs, dropout_p)
        out = torch.zeros_like(query)
        for j, (rows, keys) in enumerate(spans):
            out[:, :, rows].addcmul_(weights[j, :, :, rows, None], value[:, :, keys])
        if empty is not None:  # an empty row attended uniformly to masked keys: zero it
            out.masked_fill_(empty[..., None], 0.0)
        ctx.save_for_backward(query, key, value, probs, drop)  # weights: probs · drop
        ctx.spans, ctx.scaling, ctx.empty = spans, scaling, empty
        ctx.offsets = layout.offsets
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, probs, drop = ctx.saved_tensors
        weights = probs if drop is None else probs * drop
        spans, scaling = ctx.spans, ctx.scaling
        grad = grad.contiguous()
        if ctx.empty is not None:
            grad = grad.masked_fill(ctx.empty[..., None], 0.0)
        grad_weights = torch.zeros_like(probs)
        grad_value = torch.zeros_like(value)
        for j, (rows, keys) in enumerate(spans):
            grad_weights[j, :, :, rows] = torch.linalg.vecdot(grad[:, :, rows], value[:, :, keys])
            grad_value[:, :, keys].addcmul_(weights[j, :, :, rows, None], grad[:, :, rows])
        if drop is not None:
            grad_weights.mul_(drop)
        # masked entries have probability 0, so their score gradient is 0
        grad_scores = torch.ops.aten._softmax_backward_data(grad_weights, probs, 0, probs.dtype)
        grad_distances = None
        if ctx.needs_input_grad[7]:  # c·∂L/∂score summed per distance |D|, as masked_attention
            sums = grad_scores.float().sum(dim=(1, 3))  # [m, H]
            distance = torch.tensor(ctx.offsets, device=sums.device).abs()
            grid = sums.new_zeros(query.shape[1:3]).index_add_(1, distance, sums.T)  # [H, n]
            grad_distances = grid * MASK_PENALTY  # fp32; autograd casts it to the sample's dtype
        grad_scores.mul_(scaling)
        grad_query, grad_key = torch.zeros_like(query), torch.zeros_like(key)
        for j, (rows, keys) in enumerate(spans):
            g = grad_scores[j, :, :, rows, None]
            grad_query[:, :, rows].addcmul_(g, key[:, :, keys])
            grad_key[:, :, keys].addcmul_(g, query[:, :, rows])
        return grad_query, grad_key, grad_value, None, None, None, None, grad_distances


def diagonal_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: DiagonalLayout,
    key_padding: torch.Tensor | None,
    scaling: float,
    dropout_p: float = 0.0,
    distances: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(Q Kᵀ·scaling masked by M and padding) V over M's diagonals only.

    query/key/value: [B, H, n, d]; key_padding: bool [B, n], True = padding, or None.
    Returns [B, H, n, d]; equals dense masked attention wherever M allows. distances: a DAM_s
    hard sample [H, n] (exactly 0/1, `layout` from `distance_layout`) that receives the
    gradient `masked_attention` would give its n × n expansion.
    """
    query, key, value = (x.contiguous() for x in (query, key, value))
    return _DiagonalAttention.apply(
        query, key, value, layout, key_padding, scaling, dropout_p, distances
    )
