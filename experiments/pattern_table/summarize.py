"""The pattern table on the gated checkpoint: continued pre-training with each mask, over seeds.

Usage: python experiments/pattern_table/summarize.py SWEEP [SWEEP ...] OUT_DIR
Reads each job's `config.yaml`, `metrics.json` and mask (`artifacts/model/mask.json`: its kind,
dam_u / dam_s / attention_topk for a searched mask, and sparsity) under the pretrain sweep folders,
and writes `summary.json`, `summary.md` and `loss_vs_sparsity.png` into OUT_DIR: per mask the
sparsity, held-out MLM loss and accuracy (mean ± std over seeds), the gate count, and the
same-seed difference to dense with a 95 % t-interval (a seed fixes the batches; every seed holds
out the same documents; the paired difference is the sharper measure), and the same difference at the first
evaluation (how much the mask cost before the model adapted to it).
"""

import json
import statistics
import sys
from pathlib import Path

import yaml

from sparsebert_cli.reporting.formats import gate_text

# two-sided 95 % t quantiles by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
       10: 2.228}  # fmt: skip


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def jobs(sweeps: list[Path]) -> list[dict]:
    found = []
    for metrics_path in sorted(p for s in sweeps for p in s.glob("*/metrics.json")):
        job = metrics_path.parent
        manifest = json.loads((job / "manifest.json").read_text())
        if manifest.get("status") != "completed":
            continue
        config = yaml.safe_load((job / "config.yaml").read_text())
        metrics = json.loads(metrics_path.read_text())
        name, sparsity = config["mask"]["name"], 0.0  # dense: no mask file
        mask_path = job / "artifacts" / "model" / "mask.json"
        if mask_path.is_file():
            mask = json.loads(mask_path.read_text())
            name = mask["kind"] if name == "from_run" else name
            sparsity = mask["sparsity"]["overall"]
        first_eval = next(
            json.loads(line)
            for line in (job / "metrics.jsonl").read_text().splitlines()
            if "eval/mlm_loss" in line
        )
        found.append(
            {
                "mask": name,
                "first_eval": {"step": first_eval["step"], "loss": first_eval["eval/mlm_loss"]},
                "seed": config["seed"],
                "checkpoint": config["model"].get("from_run"),
                "sparsity": sparsity,
                "loss": metrics["eval/mlm_loss"],
                "accuracy": metrics["eval/mlm_accuracy"],
                "gate": metrics.get("eval/uses_attention"),
                "neighbour_ratio": metrics.get("eval/attn_neighbour_ratio"),
                "job": str(job),
            }
        )
    return found


def _pair(job: dict) -> tuple:
    """What a job is paired with its dense run by: the checkpoint it continues and its seed."""
    return job["checkpoint"], job["seed"]


def summarize(found: list[dict]) -> dict:
    seen: dict[tuple, str] = {}
    for job in found:
        key = (job["mask"], *_pair(job))
        if key in seen:
            raise SystemExit(f"two {job['mask']} jobs of one checkpoint and seed: {seen[key]} and "
                             f"{job['job']}; summarize one of them")  # fmt: skip
        seen[key] = job["job"]
    dense = {_pair(j): j for j in found if j["mask"] == "dense"}
    by_mask: dict[str, list[dict]] = {}
    for job in found:
        by_mask.setdefault(job["mask"], []).append(job)
    rows = {}
    for mask, group in by_mask.items():
        peers = [(j, dense[_pair(j)]) for j in group if _pair(j) in dense]
        paired = [j["loss"] - d["loss"] for j, d in peers]
        early = [j["first_eval"]["loss"] - d["first_eval"]["loss"] for j, d in peers]
        delta, spread = _mean_std(paired) if paired else (None, None)
        interval = None
        if spread is not None:
            if len(paired) - 1 not in T95:
                raise SystemExit(f"{mask}: {len(paired)} pairs; T95 holds t quantiles to 10 df")
            half = T95[len(paired) - 1] * spread / len(paired) ** 0.5
            interval = [delta - half, delta + half]
        ratios = [j["neighbour_ratio"] for j in group if j["neighbour_ratio"] is not None]
        rows[mask] = {
            "seeds": sorted(j["seed"] for j in group),
            "n_paired": len(paired),
            "sparsity": statistics.fmean(j["sparsity"] for j in group),
            "loss_mean_std": _mean_std([j["loss"] for j in group]),
            "accuracy_mean_std": _mean_std([j["accuracy"] for j in group]),
            "delta_loss_vs_dense_mean_std": [delta, spread],
            "delta_loss_95ci": interval,
            "first_eval_step": group[0]["first_eval"]["step"],
            "delta_loss_first_eval_mean_std": _mean_std(early) if early else (None, None),
            "gate_passed": sum(j["gate"] == 1.0 for j in group),
            "gate_measured": sum(j["gate"] is not None for j in group),
            "neighbour_ratio_min": min(ratios) if ratios else None,
            "runs": [
                {k: j[k] for k in ("seed", "loss", "accuracy", "neighbour_ratio", "gate", "job")}
                for j in sorted(group, key=lambda j: j["seed"])
            ],
        }
    return dict(sorted(rows.items(), key=lambda kv: kv[1]["sparsity"]))


def _pm(pair, digits: int, scale: float = 1.0) -> str:
    mean, std = pair
    if mean is None:
        return "n/a"
    return f"{scale * mean:.{digits}f}" + ("" if std is None else f" ± {scale * std:.{digits}f}")


def markdown(rows: dict) -> str:
    lines = [
        "| mask | sparsity % | MLM loss | MLM acc. % | loss − dense (same seed) | n | 95 % CI "
        "| − dense at the first evaluation | gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mask, row in rows.items():
        ci = row["delta_loss_95ci"]
        lines.append(
            f"| {mask} | {row['sparsity']:.1f} | {_pm(row['loss_mean_std'], 4)} "
            f"| {_pm(row['accuracy_mean_std'], 2, 100)} "
            f"| {_pm(row['delta_loss_vs_dense_mean_std'], 4)} | {row['n_paired']} "
            f"| {'n/a' if ci is None else f'{ci[0]:+.4f} … {ci[1]:+.4f}'} "
            f"| {_pm(row['delta_loss_first_eval_mean_std'], 4)} (step {row['first_eval_step']}) "
            f"| {gate_text((row['gate_passed'], row['gate_measured']))} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for panel, ax in enumerate(axes):
        shown = [
            (m, r) for m, r in rows.items() if r["delta_loss_vs_dense_mean_std"][0] is not None
        ]
        for index, (mask, row) in enumerate(shown):
            delta, std = row["delta_loss_vs_dense_mean_std"]
            if panel == 1 and delta > 0.3:
                continue
            searched = mask in ("dam_u", "dam_s", "attention_topk", "random")
            ax.errorbar(row["sparsity"], delta, yerr=std or 0.0, fmt="s" if searched else "o",
                        capsize=3, color="tab:red" if searched else "tab:blue")  # fmt: skip
            offset = (6, 10 - 9 * (index % 4)) if panel == 1 else (5, 4)
            ax.annotate(mask, (row["sparsity"], delta), textcoords="offset points",
                        xytext=offset, fontsize=8)  # fmt: skip
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel("sparsity % (n = 64)")
        ax.set_ylabel("held-out MLM loss − dense (same seed)")
    axes[0].set_title("all masks (red: searched and controls)")
    axes[1].set_title("zoom: differences below 0.3")
    seeds = sorted({len(row["seeds"]) for row in rows.values()})
    fig.suptitle("Continued pre-training of the gated checkpoint, 300 steps (mean ± std over "
                 f"{'/'.join(map(str, seeds))} seeds)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> int:
    *sweeps, out_dir = argv
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(jobs([Path(s) for s in sweeps]))
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(rows))
    figure(rows, out / "loss_vs_sparsity.png")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
