"""A DAM_s search at long n: a hard sample keeps whole distances, i.e. diagonals, and runs on the
block-sparse kernels (tiles or diagonals) with the gradient the dense reference gives α."""

import logging

import pytest
import torch

from sparsebert_cli.attention.block_sparse import block_layout, block_sparse_attention
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
    layout = block_layout(expand_distances(distances.detach() > 0.5, n), 32)
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
    layout = block_layout(expand_distances(torch.ones(2, n, dtype=torch.bool), n), 32)
    for wrong in (torch.ones(2, n + 1), torch.ones(3, n)):
        with pytest.raises(ValueError, match=r"distances must be \[heads, n\] = \[2, 64\]"):
            block_sparse_attention(q, k, v, layout, None, 1.0, distances=wrong)
