"""Aggregate the importance figures' numbers of a search sweep over seeds.

Usage: python experiments/importance/summarize.py SWEEP [SWEEP ...] OUT_DIR
Reads `<job>/figures/importance.json` (written by `sparsebert report --figures <job>`),
`<job>/figures/occlusion.json` when present (`sparsebert report --occlusion <job>`),
`<job>/config.yaml` and `<job>/metrics.jsonl`, and writes `summary.json` and `summary.md` into
OUT_DIR: per mask structure, the held-out MLM accuracy and "uses attention" gate of the model the
verdict rests on (the pre-training run's metrics.json when the search started from one, else the
search's own final evaluation; for a search that trains its encoder also its held-out MLM accuracy
at each evaluation), the rank of the diagonal among the n distances (1 = least kept) at each
snapshot, mean ± std over seeds (and within each head at the end, where importance.json has
it), and the final keep probability of the diagonal, the near-diagonal band, the rest, and for a
per-entry mask the [CLS] and [SEP] rows and columns.
"""

import json
import statistics
import sys
from pathlib import Path

import yaml

from sparsebert_cli.reporting.formats import gate_text

NEW_MODEL = "a new model, trained from random initialisation by the search"
# importance.json's regions whose final keep probability is tabled: the paper's diagonal and bands,
# and for a per-entry mask the [CLS] (position 0) and [SEP] (position n − 1) rows (as queries) and
# columns (as keys); under a per-distance mask (DAM_s) each of those holds every distance once, the
# same number four times and no finding
REGIONS = ("diagonal", "near_diagonal", "far", "other")
TOKEN_REGIONS = ("cls_row", "cls_column", "sep_row", "sep_column")


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _pm(mean: float, std: float | None, digits: int, sign: str = "") -> str:
    """mean ± std, the mean alone for one seed (no spread to show)."""
    spread = "" if std is None else f" ± {std:.{digits}f}"
    return f"{mean:{sign}.{digits}f}{spread}"


def _model_metrics(job: Path, config: dict) -> dict:
    """The model a search ran on and its held-out MLM accuracy and gate: its pre-training run's,
    else the search's own final evaluation (with the searched mask)."""
    upstream = config["model"].get("from_run")
    source = Path(upstream) if upstream else job
    metrics_path = source / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return {
        "model": upstream or config["model"].get("name_or_path") or NEW_MODEL,
        "measured_by": "its pre-training run" if upstream else "the search's own evaluation",
        "mlm_accuracy": metrics.get("eval/mlm_accuracy"),
        "uses_attention": metrics.get("eval/uses_attention"),
    }


def _accuracy_by_step(job: Path) -> dict[int, float]:
    """The search's held-out MLM accuracy (with its binarised mask) at each evaluation."""
    path = job / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    records = [json.loads(line) for line in lines if line.strip()]
    return {r["step"]: r["eval/mlm_accuracy"] for r in records if "eval/mlm_accuracy" in r}


def summarize(sweeps: list[Path]) -> dict:
    groups: dict[str, list[dict]] = {}
    for numbers_path in sorted(p for s in sweeps for p in s.glob("*/figures/importance.json")):
        job = numbers_path.parent.parent
        config = yaml.safe_load((job / "config.yaml").read_text())
        occlusion = numbers_path.parent / "occlusion.json"
        extra = {"occlusion": json.loads(occlusion.read_text())} if occlusion.is_file() else {}
        groups.setdefault(config["mask"]["structure"], []).append(
            {
                "seed": config["seed"],
                "model": _model_metrics(job, config),
                "trains_encoder": config["mask"].get("encoder_lr") != 0,
                "accuracy_by_step": _accuracy_by_step(job),
                **json.loads(numbers_path.read_text()),
                **extra,
            }
        )
    summary = {}
    for structure, jobs in groups.items():
        steps = jobs[0]["steps"]
        ranks = [_mean_std([job["diagonal_rank"][t] for job in jobs]) for t in range(len(steps))]
        regions = REGIONS + (TOKEN_REGIONS if structure != "structured" else ())
        final = {key: _mean_std([job[key][-1] for job in jobs]) for key in regions}
        least_kept = sum(job["diagonal_rank"][-1] == 1 for job in jobs)
        summary[structure] = {
            "seeds": sorted(job["seed"] for job in jobs),
            "models": [job["model"] for job in jobs],
            "n": jobs[0]["n"],
            "steps": steps,
            "diagonal_rank_mean_std": ranks,
            "final_keep_probability_mean_std": final,
            "seeds_where_diagonal_is_least_kept": least_kept,
        }
        if all(job["trains_encoder"] and job["accuracy_by_step"] for job in jobs):
            common = sorted(set.intersection(*(set(job["accuracy_by_step"]) for job in jobs)))
            summary[structure]["held_out_mlm_accuracy_mean_std"] = {
                step: _mean_std([job["accuracy_by_step"][step] for job in jobs]) for step in common
            }
        if all("diagonal_rank_per_layer_head" in job for job in jobs):
            summary[structure]["final_diagonal_rank_per_head"] = _per_head(jobs)
        occluded = [job["occlusion"] for job in jobs if "occlusion" in job]
        if occluded:
            summary[structure]["spearman_mean_std"] = {
                key: _mean_std([o["spearman"][key] for o in occluded])
                for key in occluded[0]["spearman"]
            }
    return summary


def _per_head(jobs: list[dict]) -> dict:
    """The diagonal's final rank within each head (its own mask) of every seed: in how many heads
    it is the least kept distance, and the ranks' median and range."""
    ranks = [r for job in jobs for layer in job["diagonal_rank_per_layer_head"][-1] for r in layer]
    return {
        "heads": len(ranks),
        "least_kept": sum(r == 1 for r in ranks),
        "median": statistics.median(ranks),
        "range": [min(ranks), max(ranks)],
    }


def _model_line(models: list[dict]) -> str:
    """The models' held-out MLM accuracy and gate, as the table's first line."""
    names = sorted({str(m["model"]) for m in models})
    accuracies = [m["mlm_accuracy"] for m in models if m["mlm_accuracy"] is not None]
    measured = [m["uses_attention"] for m in models if m["uses_attention"] is not None]
    gate = gate_text((measured.count(1.0), len(measured)))
    accuracy = "not recorded"
    if accuracies:
        ends = dict.fromkeys(f"{100 * a:.1f}" for a in (min(accuracies), max(accuracies)))
        accuracy = f"{'–'.join(ends)} %"
    return (
        f"Model: {', '.join(names)}; held-out MLM accuracy {accuracy} "
        f'({models[0]["measured_by"]}); "uses attention" gate {gate}.'
    )


def _step_table(steps: list, label: str, cells: list[str]) -> list[str]:
    """A one-row markdown table with a column per step, and the blank line after it."""
    return [
        "| step | " + " | ".join(str(step) for step in steps) + " |",
        "|---|" + "---|" * len(steps),
        f"| {label} | " + " | ".join(cells) + " |",
        "",
    ]


def _accuracy_lines(by_step: dict) -> list[str]:
    """The jointly trained model's held-out MLM accuracy (%) through the search, as a table."""
    if not by_step:
        return []
    cells = [_pm(100 * m, None if d is None else 100 * d, 1) for m, d in by_step.values()]
    return _step_table(list(by_step), "held-out MLM accuracy (%)", cells)


def _per_head_lines(per_head: dict | None) -> list[str]:
    if per_head is None:  # importance.json written before it had per-head ranks
        return []
    low, high = per_head["range"]
    return [
        f"Heads (all seeds) where the diagonal is the least kept distance of the head's own mask "
        f"at the end: {per_head['least_kept']} of {per_head['heads']}; its rank within a head "
        f"{low:g}–{high:g}, median {per_head['median']:g}.",
        "",
    ]


def to_markdown(summary: dict) -> str:
    lines = []
    for structure, s in summary.items():
        lines += [
            f"### {structure} (seeds {s['seeds']}, n = {s['n']}; rank 1 = least kept of {s['n']} distances)",
            "",
            _model_line(s["models"]),
            "",
            *_step_table(
                s["steps"], "diagonal rank", [_pm(m, d, 1) for m, d in s["diagonal_rank_mean_std"]]
            ),
            "| final keep probability | mean ± std |",
            "|---|---|",
            *(
                f"| {k} | {_pm(m, d, 4)} |"
                for k, (m, d) in s["final_keep_probability_mean_std"].items()
            ),
            "",
            *_accuracy_lines(s.get("held_out_mlm_accuracy_mean_std", {})),
            f"Seeds where the diagonal is the least kept distance at the end: "
            f"{s['seeds_where_diagonal_is_least_kept']} of {len(s['seeds'])}.",
            "",
            *_per_head_lines(s.get("final_diagonal_rank_per_head")),
            *(
                f"Spearman {k} (bands diag, 1–8, [CLS]): {_pm(m, d, 2, '+')}"
                for k, (m, d) in s.get("spearman_mean_std", {}).items()
            ),
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    *sweeps, out = (Path(a) for a in sys.argv[1:])
    result = summarize(sweeps)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    (out / "summary.md").write_text(markdown)
    print(markdown)
