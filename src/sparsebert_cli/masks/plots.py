"""Heat maps of a mask grid (layers × heads), for bool masks M and for keep probabilities σ(α).

Draws one mosaic image (a tile per layer and head, separated by blank gaps) with one colour bar,
through matplotlib's Agg canvas (no pyplot, no display); the PNG is written atomically. The title
is the figure's, wrapped to its width, and matplotlib's constrained layout places it above the
image and its colour bar, so at any head count it neither runs over the bar nor leaves the figure.
"""

import textwrap
from pathlib import Path

import torch
from matplotlib.figure import Figure

from sparsebert_cli.figures import new_figure, save_png


def mosaic(mask: torch.Tensor, gap: int) -> torch.Tensor:
    """Tiles of [L, H, n, n] laid out as a float [L·(n+gap)−gap, H·(n+gap)−gap] image, NaN in gaps."""
    layers, heads, n, _ = mask.shape
    image = torch.full((layers * (n + gap) - gap, heads * (n + gap) - gap), float("nan"))
    for layer in range(layers):
        for head in range(heads):
            top, left = layer * (n + gap), head * (n + gap)
            image[top : top + n, left : left + n] = mask[layer, head].float()
    return image


TITLE_CHARS_PER_INCH = 11  # characters of the 10-point title that fit in one inch of figure width


def mask_grid_figure(mask: torch.Tensor, title: str) -> Figure:
    """The heat map of M [L, H, n, n] (bool, or float keep probabilities in [0, 1])."""
    layers, heads, n, _ = mask.shape
    gap = max(1, n // 16)
    width, height = min(2.5 + 1.6 * heads, 24), min(1.8 + 1.6 * layers, 24)
    figure = new_figure(width, height)
    axes = figure.add_subplot()
    image = axes.imshow(
        mosaic(mask.detach().cpu(), gap).numpy(),
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    axes.set_xticks([h * (n + gap) + n / 2 for h in range(heads)], [str(h) for h in range(heads)])
    axes.set_yticks(
        [ly * (n + gap) + n / 2 for ly in range(layers)], [str(ly) for ly in range(layers)]
    )
    axes.set_xlabel("head (key position → within each tile)")
    axes.set_ylabel("layer (query position ↓ within each tile)")
    figure.suptitle(textwrap.fill(title, int(width * TITLE_CHARS_PER_INCH)), fontsize=10)
    label = "may attend (1) / masked (0)" if mask.dtype == torch.bool else "keep probability σ(α)"
    figure.colorbar(image, ax=axes, label=label, shrink=0.9)
    return figure


def plot_mask_grid(mask: torch.Tensor, path: Path, title: str) -> Path:
    """Write the heat map of M [L, H, n, n] (see `mask_grid_figure`) to `path`."""
    return save_png(mask_grid_figure(mask, title), path)
