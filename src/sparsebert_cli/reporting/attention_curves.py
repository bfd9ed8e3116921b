"""Where the heads' attention goes through training: the attention profile of every held-out
evaluation of a run (attention/profile.py, logged as `eval/attn_*` in metrics.jsonl) against the
step — the mass on the diagonal, on [CLS] and on the final [SEP] (the "attention sinks"), the best
neighbour head's ratio to uniform, and the held-out MLM accuracy beside them."""

from pathlib import Path

from sparsebert_cli import runs
from sparsebert_cli.attention.profile import GATE_MLM_ACCURACY, GATE_NEIGHBOUR_RATIO

MASS = {"eval/attn_diag_mass": "diagonal", "eval/attn_cls_mass": "[CLS]",
        "eval/attn_sep_mass": "final [SEP]"}  # fmt: skip
RATIO, ACCURACY = "eval/attn_neighbour_ratio", runs.MLM_ACCURACY
FIGURE, NUMBERS = "attention_through_training.png", "attention_through_training.json"


def attention_history(run_dir: Path) -> dict[str, list[float]]:
    """{"step": [...], metric: [...]} of the evaluations that logged an attention profile."""
    history: dict[str, list[float]] = {}
    for record in runs.read_metrics_log(run_dir):
        if RATIO not in record:
            continue
        for key in ("step", *MASS, RATIO, ACCURACY):
            history.setdefault(key, []).append(record.get(key))
    return history


def write_attention_curves(run_dir: Path, out_dir: Path) -> list[Path]:
    """Draw the curves and write their numbers into `out_dir`; [] when nothing was profiled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = attention_history(run_dir)
    if not history:
        return []
    steps = history["step"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in MASS.items():
        left.plot(steps, history[key], marker="o", markersize=3, label=label)
    left.set(xlabel="step", ylabel="mean attention mass per query", title="attention sinks")
    left.legend()
    right.plot(steps, history[RATIO], color="tab:purple", marker="o", markersize=3)
    right.axhline(GATE_NEIGHBOUR_RATIO, color="tab:purple", linestyle=":", linewidth=1)
    right.set(xlabel="step", ylabel="best neighbour head / uniform", yscale="log",
              title="neighbour heads and MLM accuracy")  # fmt: skip
    accuracy = right.twinx()
    accuracy.plot(steps, [100 * (a or 0.0) for a in history[ACCURACY]], color="tab:green")
    accuracy.axhline(100 * GATE_MLM_ACCURACY, color="tab:green", linestyle=":", linewidth=1)
    accuracy.set_ylabel("held-out MLM accuracy % (green)")
    fig.suptitle(f"{Path(run_dir).name}: the gate's thresholds dotted")
    fig.tight_layout()
    figure, numbers = out_dir / FIGURE, out_dir / NUMBERS
    runs.atomic_write(figure, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    runs.atomic_write_json(numbers, history)
    return [figure, numbers]
