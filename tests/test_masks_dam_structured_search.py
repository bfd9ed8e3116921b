"""A DAM_s search at long n: a hard sample keeps whole distances, i.e. diagonals, and runs on the
block-sparse kernels (tiles or diagonals) with the gradient the dense reference gives α."""

import logging

import pytest
import torch

from sparsebert_cli.attention.block_sparse import (
    BlockLayout,
    block_layout,
    block_sparse_attention,
    distance_layout,
)
from sparsebert_cli.attention.diagonal import expand_distances
from sparsebert_cli.attention.masked import masked_attention
from sparsebert_cli.masks.config import MaskConfig


def band_alpha(n: int, width: int, far: tuple[int, ...] = ()) -> torch.Tensor:
    """α per distance: kept (+4) up to `width` and at the `far` distances, dropped (−4) beyond."""
    alpha = torch.full((n,), -4.0)
    alpha[: width + 1] = 4.0
    alpha[list(far)] = 4.0
    return alpha


def scattered_alpha(n: int) -> torch.Tensor:
    """α per distance: about one distance in twenty kept, anywhere (many far diagonals)."""
    generator = torch.Generator().manual_seed(2)
    return torch.where(torch.rand(n, generator=generator) < 0.05, 4.0, -4.0)


def search_step(
    backend: str, n: int, alpha: torch.Tensor, frozen: bool = False, **mask
) -> tuple[torch.Tensor, dict]:
    """A search step of a DAM_s whose α per distance is `alpha`."""
    from conftest import dam_search_step

    cfg = MaskConfig(name="dam", structure="structured", seq_len=n, **mask)
    return dam_search_step(cfg, backend, frozen, alpha)


@pytest.mark.parametrize(
    "n, alpha, frozen, mask, chosen",
    [
        (512, band_alpha(512, 40), False, {}, "block density"),
        (
            530,
            band_alpha(530, 100, far=(300, 333)),
            False,
            {"share_layers": False},
            "block density",
        ),
        (512, scattered_alpha(512), False, {}, "diagonals"),
        (512, scattered_alpha(512), True, {}, "diagonals"),
    ],
    ids=["band", "band-and-far-per-layer-odd-n", "scattered", "scattered-frozen-encoder"],
)
def test_auto_searches_a_sparse_dam_s_block_sparse_with_the_masked_gradients(
    caplog, n, alpha, frozen, mask, chosen
):
    """A hard DAM_s sample runs on the tile kernel (a band) or the diagonal kernel (distances
    scattered over the sequence); the loss and every gradient, α's included, equal those of the
    dense reference."""
    with caplog.at_level(logging.INFO, logger="sparsebert_cli.attention.interface"):
        loss, grads = search_step("auto", n, alpha, frozen, **mask)
    assert "auto → block_sparse (DAM_s sample, " in caplog.text
    assert chosen in caplog.text
    reference_loss, reference = search_step("masked", n, alpha, frozen, **mask)
    torch.testing.assert_close(loss, reference_loss)
    assert reference["sparse_mask.dam.alpha"].abs().sum() > 0
    assert grads.keys() == reference.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "kept, kernel",
    [
        ([band_alpha(200, 5), band_alpha(200, 8), band_alpha(200, 1)], "pieces"),
        ([band_alpha(200, 40), band_alpha(200, 43), band_alpha(200, 60)], "tiles"),
        (
            [scattered_alpha(200), band_alpha(200, 1, far=(50, 120)), band_alpha(200, 0)],
            "diagonals",
        ),
    ],
    ids=["finer-pieces", "whole-tiles", "diagonals"],
)
def test_distance_gradient_of_the_kernels_equals_the_masked_one(kept, kernel):
    """Kernel level: each kept distance gets c·∂L/∂score over its two diagonals, from the tile
    kernel (whole tiles or key pieces finer than the block) and from the diagonal kernel, with
    the second example's last 30 keys padding."""
    n = 200
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=generator) for _ in range(3))
    padding = torch.zeros(2, n, dtype=torch.bool)
    padding[1, -30:] = True
    distances = (torch.stack(kept) > 0).float().requires_grad_()
    layout = distance_layout(distances.detach() > 0.5, 32)
    used = (
        "diagonals" if layout.diagonal is not None else "pieces" if layout.piece < 32 else "tiles"
    )
    assert used == kernel
    out = block_sparse_attention(q, k, v, layout, padding, 0.3, distances=distances)
    out.square().sum().backward()
    reference = distances.detach().clone().requires_grad_()
    masked = masked_attention(q, k, v, expand_distances(reference, n), padding, 0.3)
    masked.square().sum().backward()
    torch.testing.assert_close(out, masked)
    torch.testing.assert_close(distances.grad, reference.grad, rtol=1e-4, atol=1e-3)
    assert (reference.grad * distances.detach()).abs().sum() > 0


def test_distances_that_do_not_fit_the_layout_are_refused():
    n = 64
    q = k = v = torch.zeros(1, 2, n, 8)
    layout = distance_layout(torch.ones(2, n, dtype=torch.bool), 32)
    for wrong in (torch.ones(2, n + 1), torch.ones(3, n)):
        with pytest.raises(ValueError, match=r"distances must be \[heads, n\] = \[2, 64\]"):
            block_sparse_attention(q, k, v, layout, None, 1.0, distances=wrong)


def same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Both None, or equal tensors."""
    return a is b is None or (a is not None and b is not None and torch.equal(a, b))


def assert_same_layout(got: BlockLayout, expected: BlockLayout) -> None:
    """Every field of two layouts, the kernel's groups and diagonals included, is equal."""
    for name in ("block_size", "n", "heads", "query_blocks", "active_blocks", "piece"):
        assert getattr(got, name) == getattr(expected, name), name
    assert got.idle_blocks == expected.idle_blocks
    assert same(got.empty_queries, expected.empty_queries)
    assert len(got.groups) == len(expected.groups)
    for a, b in zip(got.groups, expected.groups, strict=True):
        for name in ("rows", "key_blocks", "allowed", "empty"):
            assert same(getattr(a, name), getattr(b, name)), name
    assert (got.diagonal is None) == (expected.diagonal is None)
    if got.diagonal is not None:
        assert got.diagonal.offsets == expected.diagonal.offsets
        assert torch.equal(got.diagonal.allowed, expected.diagonal.allowed)
        assert same(got.diagonal.empty_queries, expected.diagonal.empty_queries)


def kept_distances(kind: str, heads: int, n: int) -> torch.Tensor:
    """bool [heads, n]: distances kept per head, of a kind that reaches each of the kernels."""
    generator = torch.Generator().manual_seed(n)
    kept = torch.zeros(heads, n, dtype=torch.bool)
    if kind == "band":  # a band per head, different widths: tiles or finer pieces
        for h in range(heads):
            kept[h, : 3 + 7 * h] = True
    elif kind == "band-far":  # a band and a few far distances, the diagonal not kept
        kept[:, 1:5] = True
        kept[:, torch.randint(5, n, (3,), generator=generator)] = True
    elif kind == "random":  # one distance in ten, anywhere: nearly every tile
        kept = torch.rand(heads, n, generator=generator) < 0.1
    elif kind == "few":  # a handful of distances: the diagonal kernel
        kept[:, [0, 1, 2, 4, 8, 16]] = True
    elif kind == "far-only":  # only distances beyond half the sequence: middle rows are empty
        kept[:, n - 3 :] = True
    elif kind == "head-empty":  # the last head keeps nothing, the others a band
        kept[:-1, :4] = True
    return kept  # "nothing": no head keeps any distance


@pytest.mark.parametrize("n, block", [(64, 32), (200, 32), (530, 32), (257, 16), (20, 32)])
@pytest.mark.parametrize(
    "kind", ["band", "band-far", "random", "few", "far-only", "head-empty", "nothing"]
)
def test_the_layout_from_distances_equals_the_layout_of_their_expansion(kind, n, block):
    """distance_layout (what a search step builds, without the n × n mask) gives the very
    layout block_layout builds from the n × n mask: tiles, finer pieces, diagonals, empty and idle rows, odd n."""
    kept = kept_distances(kind, 3, n)
    expected = block_layout(expand_distances(kept, n), block)
    assert_same_layout(distance_layout(kept, block), expected)


def test_the_layouts_agree_where_the_diagonal_kernel_stops_paying():
    """From a few kept distances to many: both builders switch from the diagonal kernel to the
    tiles at the same count (with and without the distance 0, which is one diagonal, not two)."""
    n, generator = 300, torch.Generator().manual_seed(5)
    kernels = set()
    for count in range(1, 80, 3):
        for with_zero in (False, True):
            kept = torch.zeros(2, n, dtype=torch.bool)
            kept[:, torch.randperm(n - 1, generator=generator)[:count] + 1] = True
            kept[:, 0] = with_zero
            expected = block_layout(expand_distances(kept, n), 32)
            assert_same_layout(distance_layout(kept, 32), expected)
            kernels.add(expected.diagonal is not None)
    assert kernels == {True, False}
