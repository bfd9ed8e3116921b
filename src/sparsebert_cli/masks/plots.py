"""Heat maps of a mask grid (layers × heads), for bool masks M and for keep probabilities σ(α).

Draws one mosaic image (a tile per layer and head, separated by blank gaps) with one colour bar,
through matplotlib's Agg canvas (no pyplot, no display); the PNG is written atomically. The title
is the figure's, wrapped to its width, and matplotlib's constrained layout places it above the
image and its colour bar, so at any head count it neither runs over the bar nor leaves the figure.
A tile longer than TILE_PIXELS a side is drawn averaged over cells (the share of each cell that
may attend): the figure is at most 2,400 pixels wide anyway, and a full-resolution mosaic of
[1, 8, 4096, 4096] took about 14 GB to draw and crashed a finished search at long n.
"""

import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from sparsebert_cli.figures import new_figure, save_png

TILE_PIXELS = 256  # a tile's side at most; longer masks are averaged over cells (module doc)


def mosaic(mask: torch.Tensor, gap: int, size: int | None = None) -> torch.Tensor:
    """Tiles of [L, H, n, n] laid out as a float [L·(s+gap)−gap, H·(s+gap)−gap] image, NaN in gaps;
    s = `size` (default n): each tile averaged over cells down to s × s when n is longer."""
    layers, heads, n, _ = mask.shape
    size = n if size is None else min(size, n)
    image = torch.full((layers * (size + gap) - gap, heads * (size + gap) - gap), float("nan"))
    for layer in range(layers):
        for head in range(heads):  # one tile at a time: a float copy of all of M can be GBs
            tile = mask[layer, head].float()
            if size < n:
                tile = F.adaptive_avg_pool2d(tile[None, None], size)[0, 0]
            top, left = layer * (size + gap), head * (size + gap)
            image[top : top + size, left : left + size] = tile
    return image


TITLE_CHARS_PER_INCH = 11  # characters of the 10-point title that fit in one inch of figure width


def mask_grid_figure(mask: torch.Tensor, title: str) -> Figure:
    """The heat map of M [L, H, n, n] (bool, or float keep probabilities in [0, 1])."""
    layers, heads, n, _ = mask.shape
    size = min(n, TILE_PIXELS)
    gap = max(1, size // 16)
    width, height = min(2.5 + 1.6 * heads, 24), min(1.8 + 1.6 * layers, 24)
    figure = new_figure(width, height)
    axes = figure.add_subplot()
    image = axes.imshow(
        mosaic(mask.detach().cpu(), gap, size).numpy(),
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    axes.set_xticks(
        [h * (size + gap) + size / 2 for h in range(heads)], [str(h) for h in range(heads)]
    )
    axes.set_yticks(
        [ly * (size + gap) + size / 2 for ly in range(layers)], [str(ly) for ly in range(layers)]
    )
    axes.set_xlabel("head (key position → within each tile)")
    axes.set_ylabel("layer (query position ↓ within each tile)")
    figure.suptitle(textwrap.fill(title, int(width * TITLE_CHARS_PER_INCH)), fontsize=10)
    label = "may attend (1) / masked (0)" if mask.dtype == torch.bool else "keep probability σ(α)"
    if size < n:
        cell = f"{n / size:.3g} × {n / size:.3g}"
        label = (
            f"share that may attend per cell of {cell}"
            if mask.dtype == torch.bool
            else (f"keep probability σ(α), mean per cell of {cell}")
        )
    figure.colorbar(image, ax=axes, label=label, shrink=0.9)
    return figure


def plot_mask_grid(mask: torch.Tensor, path: Path, title: str) -> Path:
    """Write the heat map of M [L, H, n, n] (see `mask_grid_figure`) to `path`."""
    return save_png(mask_grid_figure(mask, title), path)
