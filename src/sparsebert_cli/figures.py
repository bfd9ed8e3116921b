"""Figures through matplotlib's Agg canvas (no pyplot, no display), written atomically as PNG."""

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> "Figure":
    """A matplotlib Figure of width × height inches at 100 dpi, constrained layout, on Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: "Figure", path: Path, tight: bool = True) -> Path:
    """Write `figure` to `path` as PNG, atomically (cropped to its content when `tight`)."""
    from sparsebert_cli.runs import atomic_write

    crop = {"bbox_inches": "tight"} if tight else {}
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", **crop))
