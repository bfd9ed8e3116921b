"""Importance analysis of a search run (docs/paper.md §2): how the keep probability σ(α) evolves.

Reads `<search_run>/artifacts/importance_trace.safetensors`: `probs` float [T, L, H, n, n] (σ(α) at
each snapshot, L = 1 for a mask shared by all layers) and `steps` int [T]. Draws
- `importance_step_<step>.png`: the keep-probability heat map per layer and head at a few snapshots;
- `importance_by_distance.png`: the mean keep probability by distance D = |i − j| over training,
  and the diagonal (D = 0), near-diagonal (1 ≤ D ≤ NEAR_DIAGONAL) and far (D > NEAR_DIAGONAL)
  entries over training;
- `importance_cls_sep.png`: the rows and columns of [CLS] (position 0) and [SEP] (position n − 1,
  the last token of a full-length sequence) against all other entries;
and writes `importance.json` with the numbers behind each figure. Means are over layers, heads and
the entries concerned (each entry weighs the same). `diagonal_rank` is the rank of D = 0 among the
n distances by mean keep probability, 1 = least important (the paper's finding), over all heads
and per layer and head; ties share the mean of their ranks (all n tied, e.g. before a head
warm-up ends: (n + 1) / 2).
"""

from pathlib import Path

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.figures import new_figure, save_png

NEAR_DIAGONAL = 3
SNAPSHOTS = 4


def _diagonal_rank(by_distance):
    """[...]: rank of D = 0 among the distances of [..., n] (1 = least kept), ties at their mean
    rank."""
    diagonal, others = by_distance[..., :1], by_distance[..., 1:]
    return 1 + (others < diagonal).sum(dim=-1) + (others == diagonal).sum(dim=-1) / 2


def load_trace(run_dir: Path):
    """(probs float [T, L, H, n, n], steps long [T]) of a search run, checked; of its snapshots
    so far while it runs (or after it stopped)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sparsebert_cli.masks.trace import stacked_snapshots

    folders = runs.layout(run_dir)
    path = folders.importance_trace
    if not path.is_file():
        tensors = stacked_snapshots(folders.trace)  # a search still running
        if not tensors:
            raise SparseBertError(
                f"{path} does not exist: {run_dir} is not a search run with an importance trace; "
                "pass the folder of a completed `sparsebert search mask=dam` run (or 'latest')."
            )
    else:
        try:
            tensors = load_file(path)
        except SafetensorError as error:
            raise SparseBertError(
                f"{path} is not a valid safetensors file ({error}); re-run the search."
            ) from None
    probs, steps = tensors.get("probs"), tensors.get("steps")
    if (
        probs is None
        or steps is None
        or probs.dim() != 5
        or probs.shape[-1] != probs.shape[-2]
        or probs.shape[-1] < 3
        or steps.shape != (probs.shape[0],)
    ):
        found = {k: list(v.shape) for k, v in tensors.items()}
        raise SparseBertError(
            f"{path} holds {found}, not 'probs' [T, L, H, n, n] with n ≥ 3 and 'steps' [T]; re-run "
            "the search to write it again."
        )
    return probs.float(), steps.long()


def snapshot_indices(count: int) -> list[int]:
    """Up to SNAPSHOTS snapshot indices spread evenly from the first to the last."""
    if count <= SNAPSHOTS:
        return list(range(count))
    return sorted({round(i * (count - 1) / (SNAPSHOTS - 1)) for i in range(SNAPSHOTS)})


def importance_numbers(probs, steps) -> dict:
    """The numbers behind the figures, per snapshot (lists of length T unless said otherwise)."""
    import torch

    from sparsebert_cli.attention.diagonal import distance_index, distance_sums

    _, _, _, n, _ = probs.shape
    mean_map = probs.mean(dim=(1, 2))  # [T, n, n]
    distance = distance_index(n)  # [n, n]
    counts = torch.bincount(distance.flatten(), minlength=n).float()
    per_head = distance_sums(probs) / counts  # [T, L, H, n]
    by_distance = per_head.mean(dim=(1, 2))  # [T, n]: every head has the same entries per distance
    near = (distance >= 1) & (distance <= NEAR_DIAGONAL)
    far = distance > NEAR_DIAGONAL
    diagonal = by_distance[:, 0]
    return {
        "steps": steps.tolist(),
        "n": n,
        "layers": probs.shape[1],
        "heads": probs.shape[2],
        "near_diagonal_max_distance": NEAR_DIAGONAL,
        "by_distance": by_distance.tolist(),  # [T][n]: mean keep probability at D = 0 … n − 1
        "diagonal": diagonal.tolist(),
        "near_diagonal": mean_map[:, near].mean(dim=1).tolist(),
        "far": mean_map[:, far].mean(dim=1).tolist(),
        "diagonal_rank": _diagonal_rank(by_distance).tolist(),
        # [T][L][H]: the same within each head (its own mask: where the heads disagree on the
        # far entries, their mean can rank the diagonal lower than any head does)
        "diagonal_rank_per_layer_head": _diagonal_rank(per_head).tolist(),
        "cls_row": mean_map[:, 0, :].mean(dim=1).tolist(),
        "cls_column": mean_map[:, :, 0].mean(dim=1).tolist(),
        "sep_row": mean_map[:, n - 1, :].mean(dim=1).tolist(),
        "sep_column": mean_map[:, :, n - 1].mean(dim=1).tolist(),
        "other": mean_map[:, 1 : n - 1, 1 : n - 1].mean(dim=(1, 2)).tolist(),
        "mean_per_layer_head": probs.mean(dim=(-1, -2)).tolist(),  # [T][L][H]
    }


def _plot_by_distance(numbers: dict, path: Path) -> Path:
    figure = new_figure(12, 4.5)
    left, right = figure.subplots(1, 2)
    steps = numbers["steps"]
    image = left.imshow(
        numbers["by_distance"],
        aspect="auto",
        origin="lower",
        cmap="viridis",
        interpolation="nearest",
        extent=(-0.5, numbers["n"] - 0.5, -0.5, len(steps) - 0.5),
    )
    left.set_yticks(range(len(steps)), [str(s) for s in steps])
    left.set_xlabel("distance |i − j|")
    left.set_ylabel("training step")
    left.set_title("mean keep probability by distance\nover training")
    figure.colorbar(image, ax=left, label="mean keep probability σ(α)")
    k = numbers["near_diagonal_max_distance"]
    for key, label in (
        ("diagonal", "diagonal (|i − j| = 0)"),
        ("near_diagonal", f"near-diagonal (1 ≤ |i − j| ≤ {k})"),
        ("far", f"far (|i − j| > {k})"),
    ):
        right.plot(steps, numbers[key], marker="o", label=label)
    right.set_xlabel("training step")
    right.set_ylabel("mean keep probability σ(α)")
    right.set_title("diagonal vs near-diagonal vs far\nover training")
    right.legend()
    return save_png(figure, path)


def cls_sep_figure(numbers: dict, last_map):
    """[CLS]/[SEP] keep probabilities over training (left) and the last map (right). The map's
    colour scale is its own range: the values of a short search all sit near σ(0) = 0.5, which a
    fixed 0–1 scale would draw as one flat colour."""
    figure = new_figure(12, 4.5)
    left, right = figure.subplots(1, 2)
    steps, n = numbers["steps"], numbers["n"]
    for key, label in (
        ("cls_row", "[CLS] row (as query)"),
        ("cls_column", "[CLS] column (as key)"),
        ("sep_row", "[SEP] row (as query)"),
        ("sep_column", "[SEP] column (as key)"),
        ("other", "all other entries"),
    ):
        left.plot(steps, numbers[key], marker="o", label=label)
    left.set_xlabel("training step")
    left.set_ylabel("mean keep probability σ(α)")
    left.set_title("[CLS] and [SEP] rows and columns\nover training")
    left.legend()
    low, high = float(last_map.min()), float(last_map.max())
    if high - low < 1e-6:  # a constant map: a small range around it, so the scale still reads
        low, high = low - 1e-3, high + 1e-3
    image = right.imshow(last_map, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
    for position in (0, n - 1):
        right.axhline(position, color="red", linewidth=0.8)
        right.axvline(position, color="red", linewidth=0.8)
    right.set_xlabel("key position j ([CLS] = 0, [SEP] = n − 1)")
    right.set_ylabel("query position i")
    right.set_title(f"keep probability at step {steps[-1]}\n(layers and heads averaged)")
    figure.colorbar(image, ax=right, label="keep probability σ(α) (scale: this map's range)")
    return figure


def write_importance_figures(run_dir: Path, out_dir: Path) -> list[Path]:
    """Draw the importance figures of a search run into `out_dir`; returns the files written."""
    from sparsebert_cli.masks.plots import plot_mask_grid

    probs, steps = load_trace(run_dir)
    numbers = importance_numbers(probs, steps)
    chosen = snapshot_indices(len(numbers["steps"]))
    written = []
    heat_maps = {}
    for index in chosen:
        step = numbers["steps"][index]
        path = plot_mask_grid(
            probs[index],
            out_dir / f"importance_step_{step:06d}.png",
            f"keep probability σ(α) per layer and head at step {step}",
        )
        heat_maps[str(step)] = path.name
        written.append(path)
    written.append(_plot_by_distance(numbers, out_dir / "importance_by_distance.png"))
    last_map = probs[-1].mean(dim=(0, 1))
    written.append(save_png(cls_sep_figure(numbers, last_map), out_dir / "importance_cls_sep.png"))
    numbers["figures"] = {
        "heat_maps": heat_maps,
        "by_distance": "importance_by_distance.png",
        "cls_sep": "importance_cls_sep.png",
    }
    json_path = out_dir / "importance.json"
    runs.atomic_write_json(json_path, numbers)
    return [*written, json_path]
