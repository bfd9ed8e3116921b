"""Mask figures: the binarised mask M of a run, and the fixed patterns side by side at one n."""

import math
from pathlib import Path

from sparsebert_cli import runs
from sparsebert_cli.figures import new_figure, save_png
from sparsebert_cli.masks.config import META_FILE


def find_mask_dir(run_dir: Path) -> Path | None:
    """The folder holding the run's mask artifact (its mask.json: the mask.safetensors beside
    it missing is damage `load_mask` names), if any: a search run's mask, else a model's."""
    for folder in (runs.layout(run_dir).artifacts, runs.layout(run_dir).model):
        if (folder / META_FILE).is_file():
            return folder
    return None


def write_run_mask_figure(run_dir: Path, out_dir: Path) -> Path | None:
    """Draw the run's binarised mask (every layer and head) as `mask_binarised.png`, if it has one."""
    from sparsebert_cli.masks.artifact import load_mask
    from sparsebert_cli.masks.plots import plot_mask_grid
    from sparsebert_cli.masks.stats import sparsity

    folder = find_mask_dir(run_dir)
    if folder is None:
        return None
    mask, meta = load_mask(folder)
    title = (
        f"binarised mask M of {Path(run_dir).name}: {meta['kind']}, n={meta['n']}, "
        f"sparsity {sparsity(mask):.1f}%"
    )
    return plot_mask_grid(mask, out_dir / "mask_binarised.png", title)


def write_pattern_grid(n: int, out_dir: Path) -> list[Path]:
    """Every fixed pattern of the catalogue (its conf/mask preset, head 0) at length n.

    Writes `patterns_n<n>.png` and `patterns_n<n>.json` (sparsity of each pattern in %).
    """
    from sparsebert_cli.masks.catalogue import presets
    from sparsebert_cli.masks.patterns import PATTERNS, pattern_mask
    from sparsebert_cli.masks.stats import sparsity

    configs = presets(list(PATTERNS))
    columns = 5
    rows = math.ceil(len(configs) / columns)
    figure = new_figure(2.8 * columns + 1, 3.1 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    numbers = {}
    image = None
    for ax, (name, cfg) in zip(axes, configs.items(), strict=False):
        mask = pattern_mask(cfg, n, 1)[0]  # [n, n]
        numbers[name] = sparsity(mask)
        image = ax.imshow(
            mask.float().numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest"
        )
        ax.set_title(f"{name}: sparsity {numbers[name]:.1f}%")
        ax.set_xlabel("key position j")
        ax.set_ylabel("query position i")
    for ax in axes[len(configs) :]:
        ax.set_axis_off()
    figure.suptitle(f"Fixed attention patterns at n = {n} (head 0; 1 = may attend)")
    figure.colorbar(image, ax=list(axes), label="may attend (1) / masked (0)", shrink=0.6)
    png = save_png(figure, out_dir / f"patterns_n{n}.png")
    json_path = out_dir / f"patterns_n{n}.json"
    runs.atomic_write_json(json_path, {"n": n, "sparsity": numbers})
    return [png, json_path]
