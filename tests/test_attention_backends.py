"""The attention backends agree with the masked reference, on every mask pattern, and keep the
empty-row rule (a query with no allowed key gets a zero output, never NaN)."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sparsebert_cli.attention import masked as masked_module
from sparsebert_cli.attention.block_sparse import (
    GROUP_COST,
    _group_counts,
    block_layout,
    block_sparse_attention,
)
from sparsebert_cli.attention.diagonal import diagonal_attention, diagonal_layout, mask_offsets
from sparsebert_cli.attention.flex import flex_block_mask, flex_sparse_attention
from sparsebert_cli.attention.masked import (
    any_in_pieces,
    build_sdpa_mask,
    masked_attention,
    sdpa_attention,
)
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.masks.patterns import PATTERNS, pattern_mask

CONF_MASKS = Path(__file__).resolve().parents[1] / "conf" / "mask"
PATTERN_FILES = sorted(p for p in CONF_MASKS.glob("*.yaml") if p.stem in PATTERNS)
HEADS, DIM, SCALE = 2, 8, 8**-0.5
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def catalogue_mask(path: Path, n: int) -> torch.Tensor:
    cfg = OmegaConf.merge(OmegaConf.structured(MaskConfig), OmegaConf.load(path))
    return pattern_mask(cfg, n, HEADS)


def qkv(batch: int, n: int, seed: int = 0, grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, HEADS, n, DIM, generator=g).requires_grad_(grad) for _ in range(3)]


def padding(lengths: list[int], n: int) -> torch.Tensor:
    """bool [B, n], True = padding."""
    return torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]


def test_the_catalogue_has_fixed_patterns_to_check():
    assert len(PATTERN_FILES) >= 8


@pytest.mark.parametrize("path", PATTERN_FILES, ids=lambda p: p.stem)
def test_block_sparse_equals_masked_on_every_pattern_with_padding_and_odd_length(path):
    n = 75  # not a multiple of the block size
    mask = catalogue_mask(path, n)
    q, k, v = qkv(2, n)
    pad = padding([75, 61], n)
    expected = masked_attention(q, k, v, mask, pad, SCALE)
    got = block_sparse_attention(q, k, v, block_layout(mask, 16), pad, SCALE)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [6, 12, 20])
@pytest.mark.parametrize("path", PATTERN_FILES, ids=lambda p: p.stem)
def test_block_sparse_equals_masked_on_a_padded_batch_within_one_block(path, n):
    """A short padded batch (finetuning) is one query block per head, its padding per head a
    broadcast; layouts of finer key pieces (most of these, with 4 heads) read it in pieces."""
    heads = 4
    cfg = OmegaConf.merge(OmegaConf.structured(MaskConfig), OmegaConf.load(path))
    mask = pattern_mask(cfg, n, heads)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, heads, n, DIM, generator=g) for _ in range(3))
    pad = padding([n, n - 3], n)
    expected = masked_attention(q, k, v, mask, pad, SCALE)
    got = block_sparse_attention(q, k, v, block_layout(mask, 32), pad, SCALE)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", PATTERN_FILES, ids=lambda p: p.stem)
def test_flex_forward_equals_masked_on_every_pattern_with_padding_and_odd_length(path):
    n = 75
    mask = catalogue_mask(path, n)
    q, k, v = qkv(2, n)
    pad = padding([75, 61], n)
    expected = masked_attention(q, k, v, mask, pad, SCALE)
    block_mask = flex_block_mask(mask, pad, 16)
    got = flex_sparse_attention(q, k, v, block_mask, SCALE, compiled=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", PATTERN_FILES, ids=lambda p: p.stem)
def test_sdpa_equals_masked_on_every_pattern_with_padding(path):
    n = 75
    mask = catalogue_mask(path, n)
    q, k, v = qkv(2, n)
    pad = padding([75, 61], n)
    expected = masked_attention(q, k, v, mask, pad, SCALE)
    torch.testing.assert_close(
        sdpa_attention(q, k, v, mask, pad, SCALE), expected, atol=1e-5, rtol=0
    )


@pytest.mark.filterwarnings("ignore::sparsebert_cli.masks.empty_rows.EmptyAttentionRowWarning")
@pytest.mark.parametrize("pad_at", ["end", "middle"])
@pytest.mark.parametrize("name, alike", [("strided", True), ("no_diag", True), ("random", False)])
def test_sdpa_keeps_one_float_mask_for_heads_alike(monkeypatch, name, alike, pad_at):
    """A mask whose heads are alike gets one [1, 1, n, n] float mask that SDPA broadcasts over the
    heads, kept up to the cache limit as one head's (a 12-head no_diag mask at n = 2048: 16 MiB,
    kept, instead of 192 MiB built at every call); outputs and gradients are the reference's."""
    n = 40
    monkeypatch.setattr(masked_module, "SDPA_CACHE_BYTES", n * n * 4)  # one head in float32
    mask = catalogue_mask(CONF_MASKS / f"{name}.yaml", n)
    prepared = build_sdpa_mask(mask, torch.float32)
    if alike:
        assert prepared.bias.shape == (1, 1, n, n)
    else:
        assert prepared.bias is None and prepared.bias_mask.shape == (HEADS, n, n)
    pad = padding([40, 33], n)
    if pad_at == "middle":
        pad = pad.roll(-10, dims=-1)
    outputs = []
    for attention in (
        lambda q, k, v: sdpa_attention(q, k, v, mask, pad, SCALE, prepared=prepared),
        lambda q, k, v: masked_attention(q, k, v, mask, pad, SCALE),
    ):
        q, k, v = qkv(2, n, grad=True)
        out = attention(q, k, v)
        out.square().sum().backward()
        outputs.append([out, q.grad, k.grad, v.grad])
    for got, expected in zip(*outputs, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore::sparsebert_cli.masks.empty_rows.EmptyAttentionRowWarning")
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_finds_the_empty_rows_of_every_head_when_heads_are_alike(padded):
    """The empty rows of a mask with heads alike are read from one head and hold for all."""
    n = 24
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    mask[5] = False
    mask = mask.expand(HEADS, n, n).clone()
    prepared = build_sdpa_mask(mask, torch.float32)
    assert prepared.bias.shape == (1, 1, n, n)
    assert prepared.empty.shape == (1, HEADS, n, 1)
    assert prepared.empty[0, :, :, 0].nonzero()[:, 1].tolist() == [5] * HEADS
    q, k, v = qkv(2, n)
    pad = padding([24, 20], n) if padded else None
    got = sdpa_attention(q, k, v, mask, pad, SCALE, prepared=prepared)
    assert not got[:, :, 5].any()
    torch.testing.assert_close(got, masked_attention(q, k, v, mask, pad, SCALE), atol=1e-5, rtol=0)


@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_with_a_mask_too_large_to_keep_its_bias(monkeypatch, padded):
    """Above SDPA_CACHE_BYTES the prepared mask has no bias: it is built per call, not None."""
    monkeypatch.setattr(masked_module, "SDPA_CACHE_BYTES", 0)
    n = 40
    mask = catalogue_mask(CONF_MASKS / "strided.yaml", n)
    q, k, v = qkv(2, n)
    pad = padding([40, 33], n) if padded else None
    prepared = build_sdpa_mask(mask, q.dtype)
    assert prepared.bias is None
    got = sdpa_attention(q, k, v, mask, pad, SCALE, prepared=prepared)
    torch.testing.assert_close(got, masked_attention(q, k, v, mask, pad, SCALE), atol=1e-5, rtol=0)


def test_flex_without_padding_equals_masked_using_full_blocks():
    n = 64
    mask = catalogue_mask(CONF_MASKS / "longformer.yaml", n)
    q, k, v = qkv(1, n)
    block_mask = flex_block_mask(mask, None, 16)
    got = flex_sparse_attention(q, k, v, block_mask, SCALE, compiled=False)
    torch.testing.assert_close(got, masked_attention(q, k, v, mask, None, SCALE), atol=1e-5, rtol=0)


@pytest.mark.parametrize("lengths", [[45, 30], [45]], ids=["batch", "one sequence"])
def test_block_sparse_gradients_equal_masked_gradients(lengths):
    """One sequence sums the key and value gradients another way (`_scatter_add`)."""
    n = 45
    mask = catalogue_mask(CONF_MASKS / "bigbird.yaml", n)  # per-head random keys
    pad = padding(lengths, n)
    grads = []
    for attend in (
        lambda q, k, v: masked_attention(q, k, v, mask, pad, SCALE),
        lambda q, k, v: block_sparse_attention(q, k, v, block_layout(mask, 16), pad, SCALE),
    ):
        q, k, v = qkv(len(lengths), n, grad=True)
        weights = torch.linspace(-1, 1, DIM)
        (attend(q, k, v) * weights).sum().backward()
        grads.append([q.grad, k.grad, v.grad])
    for got, expected in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_block_sparse_handles_a_different_mask_per_head():
    n = 40
    mask = torch.stack([torch.eye(n, dtype=torch.bool), torch.ones(n, n, dtype=torch.bool).tril()])
    q, k, v = qkv(1, n)
    got = block_sparse_attention(q, k, v, block_layout(mask, 8), None, SCALE)
    torch.testing.assert_close(got, masked_attention(q, k, v, mask, None, SCALE), atol=1e-5, rtol=0)


def test_block_layout_keeps_only_the_tiles_the_mask_touches():
    n, size = 64, 16
    i = torch.arange(n)
    window = ((i[:, None] - i[None, :]).abs() <= 2)[
        None
    ]  # a band: the diagonal tiles and their neighbours
    layout = block_layout(window, size)
    assert layout.active_blocks == 4 + 2 * 3
    assert layout.block_density == pytest.approx(10 / 16)


@pytest.mark.parametrize("piece", [8, 16, 40, 6])
def test_any_in_pieces_equals_any_over_each_piece(piece):
    """Word-wise where it can (a piece of whole 64-bit words, aligned), bytewise otherwise (a
    piece of 6, a slice at an odd offset, a transposed view): the same answer every way."""
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 17, 240, generator=g) < 0.02  # sparse: most pieces hold no True
    for view in (mask, mask[:, 1:], mask.flatten()[1 : 1 + 50 * 240].view(50, 240), mask.mT.mT):
        expected = view.reshape(*view.shape[:-1], -1, piece).any(dim=-1)
        assert torch.equal(any_in_pieces(view, piece), expected)
    assert torch.equal(
        any_in_pieces(mask.transpose(0, 1), piece), any_in_pieces(mask, piece).transpose(0, 1)
    )


def _star(n: int) -> torch.Tensor:
    """The star pattern, [1, n, n]: distances ≤ 1 and token 0 global."""
    i = torch.arange(n)
    star = (i[:, None] - i[None, :]).abs() <= 1
    star[0, :] = True
    star[:, 0] = True
    return star[None]


def test_a_global_token_does_not_make_the_other_rows_dense():
    layout = block_layout(_star(128), 16)
    # query block 0 needs all 128 keys; the others (in pieces of 8 keys) the global token's piece
    # and the 4 pieces around their own block
    assert layout.piece == 8
    assert [g.allowed.shape[-1] for g in layout.groups] == [128, 5 * 8]
    assert [len(g.rows) for g in layout.groups] == [1, 7]


def test_scored_fraction_counts_the_entries_the_kernel_scores_not_its_tiles():
    """The benchmark's ideal 1 / block density understates a kernel that scores fewer entries
    (key pieces finer than a tile, or M's diagonals): the star mask above scores 1·16·128 +
    7·16·40 of 128² entries in 8-key pieces, while 22 of its 64 tiles are active."""
    layout = block_layout(_star(128), 16)
    assert layout.scored_fraction == pytest.approx((16 * 128 + 7 * 16 * 40) / 128**2)
    assert layout.scored_fraction < layout.block_density
    logsparse = pattern_mask(MaskConfig(name="logsparse"), 512, 1)
    diagonals = block_layout(logsparse, 32)
    assert diagonals.diagonal is not None
    assert diagonals.scored_fraction == pytest.approx(len(diagonals.diagonal.offsets) / 512)


def test_rows_split_into_groups_only_where_the_padding_costs_more_than_a_group():
    """A group costs GROUP_COST scored entries; padding a row costs its missing slots' entries."""
    slot = 16 * 16
    # 7 rows of 4 tiles padded to 8: 28 slots (7,168 entries) > GROUP_COST: their own group
    groups, cost = _group_counts([8] + [4] * 7, slot)
    assert groups == [[8], [4]] and cost == 2 * GROUP_COST + slot * (8 + 4 * 7)
    # a band's 2 edge rows padded from 2 to 3 tiles: 2 slots (512 entries): one group
    assert _group_counts([2] + [3] * 6 + [2], slot)[0] == [[3, 2]]
    assert _group_counts([0, 0], slot) == ([], 0)  # rows without keys are in no group


def few_diagonals(n: int) -> torch.Tensor:
    """Head 0 LogSparse, head 1 the diagonals D ∈ {−5, 0, 3} with one entry removed."""
    i = torch.arange(n)
    distance = i[None, :] - i[:, None]
    mask = catalogue_mask(CONF_MASKS / "logsparse.yaml", n)
    mask[1] = (distance == -5) | (distance == 0) | (distance == 3)
    mask[1, 10, 13] = False
    return mask


def test_a_mask_on_few_diagonals_takes_the_diagonal_kernel_and_equals_masked():
    n = 75
    mask = few_diagonals(n)
    layout = block_layout(mask, 16)
    assert layout.diagonal is not None and len(layout.diagonal.offsets) == 15 + 2
    pad = padding([75, 61], n)
    grads = []
    for attend in (
        lambda q, k, v: masked_attention(q, k, v, mask, pad, SCALE),
        lambda q, k, v: block_sparse_attention(q, k, v, layout, pad, SCALE),
    ):
        q, k, v = qkv(2, n, grad=True)
        out = attend(q, k, v)
        (out * torch.linspace(-1, 1, DIM)).sum().backward()
        grads.append([out, q.grad, k.grad, v.grad])
    for got, expected in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["window", "longformer", "bigbird", "star"])
def test_masks_on_many_diagonals_keep_the_tiles(name):
    """A band's tiles are full: scoring them costs less than its diagonals one by one."""
    assert block_layout(catalogue_mask(CONF_MASKS / f"{name}.yaml", 256), 16).diagonal is None


@pytest.mark.parametrize("name", ["bigbird", "logsparse"])
def test_the_written_out_backward_is_the_gradient_with_attention_dropout(name):
    """gradcheck in float64, the dropout draw fixed by reseeding before each call: the tile
    kernel (bigbird) and the diagonal kernel (logsparse) differentiate their own forward.
    Fast mode (random projections of the Jacobian, 0.7 s instead of 68 s) with tolerances
    tight enough that a 1 % error in the dropout backward's scale fails it."""
    n = 24
    mask = catalogue_mask(CONF_MASKS / f"{name}.yaml", n)
    layout = block_layout(mask, 8)
    assert (layout.diagonal is not None) == (name == "logsparse")
    pad = padding([24, 19], n)
    q, k, v = (t.double().requires_grad_() for t in qkv(2, n))

    def attend(q, k, v):
        torch.manual_seed(0)
        return block_sparse_attention(q, k, v, layout, pad, SCALE, dropout_p=0.3)

    assert not torch.equal(attend(q, k, v), block_sparse_attention(q, k, v, layout, pad, SCALE))
    assert torch.autograd.gradcheck(attend, (q, k, v), fast_mode=True, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("heads, n", [(HEADS, 40), (1, 32)], ids=["longer-layout", "one-head"])
def test_a_layout_of_another_length_or_head_count_is_refused(heads, n):
    """A layout for n = 40 on inputs of n = 32 attended to zero-padded keys without a word."""
    q, k, v = qkv(1, 32)
    layout = block_layout(torch.ones(heads, n, n, dtype=torch.bool), 8)
    with pytest.raises(ValueError, match=rf"layout is for {heads} heads at n = {n}"):
        block_sparse_attention(q, k, v, layout, None, SCALE)


def test_block_layout_of_a_dense_mask_has_every_tile():
    layout = block_layout(torch.ones(2, 50, 50, dtype=torch.bool), 16)
    assert layout.block_density == 1.0


def empty_row_case():
    """Row 3 of head 0 allows only key 7, which sequence 1 pads away; row 5 allows nothing."""
    n = 20
    mask = torch.ones(HEADS, n, n, dtype=torch.bool)
    mask[0, 3] = False
    mask[0, 3, 7] = True
    mask[:, 5] = False
    pad = padding([20, 7], n)
    return mask, pad


BACKENDS = {
    "masked": lambda q, k, v, m, p: masked_attention(q, k, v, m, p, SCALE),
    "masked_soft": lambda q, k, v, m, p: masked_attention(q, k, v, m.float(), p, SCALE),
    "sdpa": lambda q, k, v, m, p: sdpa_attention(q, k, v, m, p, SCALE),
    "block_sparse": lambda q, k, v, m, p: block_sparse_attention(
        q, k, v, block_layout(m, 8), p, SCALE
    ),
    "diagonal": lambda q, k, v, m, p: diagonal_attention(
        q, k, v, diagonal_layout(m, mask_offsets(m, float("inf"))), p, SCALE
    ),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", BACKENDS)
def test_an_empty_row_gets_zero_output_and_finite_gradients(name):
    mask, pad = empty_row_case()
    q, k, v = qkv(2, 20, grad=True)
    out = BACKENDS[name](q, k, v, mask, pad)
    out.sum().backward()
    assert out[:, :, 5].abs().max() == 0
    assert out[1, 0, 3].abs().max() == 0
    assert out[0, 0, 3].abs().max() > 0
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flex_empty_row_gets_zero_output():
    mask, pad = empty_row_case()
    q, k, v = qkv(2, 20)
    out = flex_sparse_attention(q, k, v, flex_block_mask(mask, pad, 8), SCALE, compiled=False)
    assert out[:, :, 5].abs().max() == 0
    assert out[1, 0, 3].abs().max() == 0


def test_a_soft_mask_gives_the_boolean_mask_forward():
    mask = catalogue_mask(CONF_MASKS / "window.yaml", 30)
    q, k, v = qkv(2, 30)
    soft = masked_attention(q, k, v, mask.float(), None, SCALE)
    torch.testing.assert_close(
        soft, masked_attention(q, k, v, mask, None, SCALE), atol=1e-6, rtol=0
    )


def test_a_soft_mask_receives_gradients_at_kept_entries_only():
    n = 12
    mask = catalogue_mask(CONF_MASKS / "window.yaml", n).float().requires_grad_(True)
    q, k, v = qkv(1, n)
    masked_attention(q, k, v, mask, None, SCALE).pow(2).sum().backward()
    kept = mask.detach().bool()
    assert mask.grad[kept].abs().sum() > 0
    assert mask.grad[~kept].abs().sum() == 0
