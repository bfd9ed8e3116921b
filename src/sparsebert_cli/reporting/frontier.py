"""The quality–sparsity–speed frontier of a sweep (`sparsebert report RUNS --frontier`).

One point per row of the results table: its quality (held-out MLM loss, the task Average and the
worst task beside it), its sparsity, and the attention time of its mask at the run's n with the
backend `auto` picks for a training step without attention dropout (forward + backward, timed in
this process, on one thread) as a ratio to dense SDPA timed side by side: in alternating rounds,
each sample repeated to last at least SAMPLE_S, the median of the rounds' ratios (per layer mask;
a mask shared by the layers is timed once), averaged over the layers. On a busy machine a call on
several threads can take 100× longer in one moment than in the next (0.4 against 40 ms at n = 64,
load 3 on 2 cores: a thread descheduled at a barrier stalls the others), so times taken apart gave
ratios from 0.01 to 60 for masks that all ran SDPA; one thread and paired rounds kept them within
0.98–1.26 there. The ratio is a relative cost: the absolute times are one thread's. A row whose
mask file is not found (a moved runs folder, its inputs outside it) is left out with a warning,
not timed as dense. A row is Pareto-optimal when no other row is at least as good on both quality
and the other axis, and better on one; quality is the task Average, or the held-out MLM loss
(lower is better) for a sweep of pre-trainings alone. Writes frontier.json, frontier.csv and
frontier.png.
"""

import csv
import io
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sparsebert_cli import runs
from sparsebert_cli.figures import new_figure, save_png
from sparsebert_cli.reporting.formats import gate_text
from sparsebert_cli.reporting.records import (
    PRETRAIN_STAGE,
    _input_dirs,
    collect_runs,
    lookup,
    runs_root,
)
from sparsebert_cli.reporting.table import Row, build_table

TIMING_BATCH, TIMING_ROUNDS, SAMPLE_S = 4, 7, 0.05
FILES = ("frontier.json", "frontier.csv", "frontier.png")


@dataclass
class FrontierPoint:
    label: str
    sparsity: float | None  # %
    mlm_loss: float | None
    # the held-out MLM accuracy (a fraction) and "uses attention" gate ("2/3 pass", "n/a") of the
    # row's pre-trainings: what a verdict about attention rests on
    mlm_accuracy: float | None
    gate: str
    average: float | None  # the table's Average (×100)
    worst: float | None  # the lowest task headline of the row (×100)
    worst_task: str | None
    n: int
    backend: str  # what auto picks for this mask in training without attention dropout
    attention_ms: float  # forward + backward, all layers
    dense_ms: float  # dense SDPA, same shapes
    # attention / dense SDPA: per layer mask the median over the timing rounds, averaged over
    # the layers (not attention_ms / dense_ms, which are medians of each side alone)
    time_ratio: float
    # what the frontiers rank: "average" (the task Average), or "mlm_loss" (lower is better)
    # for a sweep of pre-trainings alone, which has no task columns
    ranked_by: str = "average"
    pareto_sparsity: bool = False  # on the quality-vs-sparsity frontier
    pareto_time: bool = False  # on the quality-vs-time frontier


def pareto(points: list[tuple[float | None, float | None]]) -> list[bool]:
    """Which (quality, other) points no other point dominates; both axes: higher is better.

    A point with a missing coordinate is never on the frontier.
    """
    known = [(q, o) for q, o in points if q is not None and o is not None]
    return [
        q is not None
        and o is not None
        and not any(q2 >= q and o2 >= o and (q2 > q or o2 > o) for q2, o2 in known)
        for q, o in points
    ]


def _row_mask(row: Row, records: dict[str, object]):
    """(M bool [L, H, n, n] or None if it has no mask file, the record) of the row's first
    completed run."""
    from sparsebert_cli.masks.artifact import MASK_FILE, load_mask

    for run_dir in [run for cell in row.all_cells() for run in cell.runs]:
        record = records[run_dir]
        if record.status != "completed":
            continue
        manifest = runs.load_manifest(record.dir) or {}
        root = runs_root(record.dir, str(manifest.get("stage")))
        for candidate in (record.dir, *_input_dirs(record.dir, manifest, root)):
            for folder in (runs.layout(candidate).model, runs.layout(candidate).artifacts):
                if (folder / MASK_FILE).is_file():
                    return load_mask(folder)[0], record
        return None, record
    return None, None


def _sample(step, repeats: int) -> float:
    """Seconds per call of `step`, over `repeats` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def _paired(step, dense) -> tuple[float, float, float]:
    """(ms of `step`, ms of `dense`, median ratio step / dense) over TIMING_ROUNDS alternating
    rounds; each sample repeats its call to last ≥ SAMPLE_S (one sub-millisecond call is mostly
    timer and scheduler)."""
    repeats = [max(1, math.ceil(SAMPLE_S / _sample(f, 1))) for f in (step, dense)]  # warm-up too
    rounds = [(_sample(step, repeats[0]), _sample(dense, repeats[1])) for _ in range(TIMING_ROUNDS)]
    ms = [1000 * statistics.median(times) for times in zip(*rounds, strict=True)]
    return ms[0], ms[1], statistics.median(a / b for a, b in rounds)


def time_attention(mask, n: int, heads: int, dim: int, layers: int, block_size: int):
    """(backend auto picks, ms of its forward + backward over `layers`, ms of dense SDPA over
    `layers`, the ratio: the layers' median ratios to dense, averaged), on one thread; mask None:
    dense."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _time_layers(mask, n, heads, dim, layers, block_size)
    finally:
        torch.set_num_threads(threads)


def _time_layers(mask, n: int, heads: int, dim: int, layers: int, block_size: int):
    import torch
    import torch.nn.functional as F

    from sparsebert_cli.attention.block_sparse import block_sparse_attention
    from sparsebert_cli.attention.interface import AttentionMask, choose_backend
    from sparsebert_cli.attention.masked import masked_attention, sdpa_attention
    from sparsebert_cli.masks.artifact import fit_to_length

    generator = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(TIMING_BATCH, heads, n, dim, generator=generator).requires_grad_()
        for _ in range(3)
    )
    scaling = dim**-0.5

    def dense() -> None:
        F.scaled_dot_product_attention(q, k, v, scale=scaling).sum().backward()

    if mask is None:
        _, dense_ms, _ = _paired(dense, dense)
        return "sdpa", dense_ms * layers, dense_ms * layers, 1.0
    fitted = fit_to_length(mask, n)
    masks = AttentionMask(fitted)
    timed = range(min(layers, len(fitted)))  # a mask shared by every layer is timed once
    chosen, total, dense_total, ratios = None, 0.0, 0.0, []
    for layer in timed:
        m = masks.layer(layer)
        backend, _ = choose_backend(masks, layer, block_size, dropout=0.0)
        chosen = chosen or backend

        def step(backend: str = backend, layer: int = layer, m: torch.Tensor = m) -> None:
            if backend == "block_sparse":
                layout = masks.layout(layer, block_size)
                out = block_sparse_attention(q, k, v, layout, None, scaling)
            elif backend == "masked":
                out = masked_attention(q, k, v, m, None, scaling)
            else:  # sdpa, or flex on CUDA (timed as what it stands for: the fused masked kernel)
                prepared = masks.sdpa_mask(layer, q.dtype)
                out = sdpa_attention(q, k, v, m, None, scaling, 0.0, prepared)
            out.sum().backward()

        ms, dense_ms, ratio = _paired(step, dense)
        total, dense_total = total + ms, dense_total + dense_ms
        ratios.append(ratio)
    scale = layers / len(timed)
    return chosen, total * scale, dense_total * scale, statistics.fmean(ratios)


def _worst(row: Row, labels: list[str]) -> tuple[float | None, str | None]:
    """The row's lowest task headline (the mean of a cell's numbers) and its task label."""
    found = []
    for cell, label in zip(row.cells, labels, strict=True):
        means = [s.mean for s in cell.values.values() if s.mean is not None]
        if means:
            found.append((statistics.fmean(means), label))
    return min(found) if found else (None, None)


def _value(record, key: str, default):
    """A config value of the run, or the schema's default when the run does not record it."""
    found = lookup(record, key)
    return default if found is None else found


def build_frontier(paths: list[Path]) -> tuple[list[FrontierPoint], list[str]]:
    """The frontier points of the rows of the results table of `paths`, and the warnings: the
    table's, and the rows left out for want of their mask file."""
    from sparsebert_cli.config import ModelConfig
    from sparsebert_cli.data.config import DataConfig, TaskConfig

    table = build_table(paths)
    records = {str(r.dir): r for r in collect_runs([Path(p) for p in paths])[0]}
    labels = [c.label for c in table.columns]
    defaults = ModelConfig()
    points, warnings = [], list(table.warnings)
    for row in table.rows:
        mask, record = _row_mask(row, records)
        if record is None:
            continue
        if mask is None and (row.sparsity or 0) > 0:
            warnings.append(
                f"{row.label}: left out, its mask ({row.sparsity:.2f} % sparse) was not found "
                f"beside {record.dir} or in the runs it names inside its runs folder."
            )
            continue
        if record.stage == PRETRAIN_STAGE:
            n = int(_value(record, "data.seq_len", DataConfig().seq_len))
        else:
            n = int(_value(record, "task.seq_len", TaskConfig().seq_len))
        heads = int(_value(record, "model.num_heads", defaults.num_heads))
        dim = int(_value(record, "model.hidden_size", defaults.hidden_size)) // heads
        layers = int(_value(record, "model.num_layers", defaults.num_layers))
        block = int(_value(record, "model.block_size", defaults.block_size))
        backend, ms, dense_ms, ratio = time_attention(mask, n, heads, dim, layers, block)
        worst, worst_task = _worst(row, labels)
        points.append(
            FrontierPoint(
                label=row.label,
                sparsity=row.sparsity,
                mlm_loss=row.mlm_loss.mean,
                mlm_accuracy=row.mlm_accuracy.mean,
                gate=gate_text(row.gate),
                average=row.average,
                worst=worst,
                worst_task=worst_task,
                n=n,
                backend=backend,
                attention_ms=ms,
                dense_ms=dense_ms,
                time_ratio=ratio,
                ranked_by="average" if table.columns else "mlm_loss",
            )
        )
    quality = [_quality(p) for p in points]
    on_sparsity = pareto([(q, p.sparsity) for q, p in zip(quality, points, strict=True)])
    on_time = pareto([(q, -p.time_ratio) for q, p in zip(quality, points, strict=True)])
    for point, a, b in zip(points, on_sparsity, on_time, strict=True):
        point.pareto_sparsity, point.pareto_time = a, b
    return points, warnings


def _quality(point: FrontierPoint) -> float | None:
    """Higher is better: the task Average, or −MLM loss (`ranked_by`)."""
    if point.ranked_by == "average":
        return point.average
    return None if point.mlm_loss is None else -point.mlm_loss


def _plot(points: list[FrontierPoint], path: Path) -> Path:
    figure = new_figure(11, 4.5)
    axes = figure.subplots(1, 2)
    by_loss = bool(points) and points[0].ranked_by == "mlm_loss"
    y_of = (lambda p: p.mlm_loss) if by_loss else (lambda p: p.average)
    shown = [p for p in points if y_of(p) is not None]
    for ax, x_of, flag, xlabel in (
        (axes[0], lambda p: p.sparsity or 0.0, "pareto_sparsity", "attention sparsity (%)"),
        (
            axes[1],
            lambda p: p.time_ratio,
            "pareto_time",
            "attention time / dense SDPA (fwd+bwd, one thread)",
        ),
    ):
        for p in shown:
            on = getattr(p, flag)
            ax.scatter(x_of(p), y_of(p), marker="*" if on else "o", s=140 if on else 40)
            if p.worst is not None:  # the worst task beside the mean
                ax.plot([x_of(p), x_of(p)], [p.worst, p.average], color="grey", lw=0.8)
            ax.annotate(p.label, (x_of(p), y_of(p)), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")  # fmt: skip
        front = sorted((p for p in shown if getattr(p, flag)), key=x_of)
        ax.plot([x_of(p) for p in front], [y_of(p) for p in front], "k--", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(
            "held-out MLM loss (lower is better)"
            if by_loss
            else "task Average ×100 (line down to the worst task)"
        )
    figure.suptitle("Quality vs sparsity and vs attention time (★ = Pareto-optimal)")
    return save_png(figure, path, tight=False)


def write_frontier(points: list[FrontierPoint], out_dir: Path) -> list[Path]:
    """frontier.json, frontier.csv and frontier.png in `out_dir`."""
    rows = [asdict(p) for p in points]
    json_path, csv_path, png_path = (Path(out_dir) / name for name in FILES)
    runs.atomic_write_json(json_path, {"points": rows})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(FrontierPoint.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(rows)
    runs.atomic_write_text(csv_path, buffer.getvalue())
    return [json_path, csv_path, _plot(points, png_path)]
