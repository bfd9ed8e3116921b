"""Per-seed numbers behind the pattern table: pre-training MLM loss paired with dense, and what
the searched DAM masks kept.

Usage: python experiments/pattern_table/summarize.py runs/pipeline/multirun/pattern_table OUT_DIR
Follows each pipeline job's manifest to its pre-training (and, for DAM, search) run and writes
`mlm_by_seed.json` and `mlm_by_seed.md` into OUT_DIR: per mask the held-out MLM loss and accuracy
of each seed's pre-training and the loss difference to dense with the same seed (seeds share data
order and initialisation, so the paired difference is far less noisy than the loss itself), and
for each searched mask its sparsity and the kept fraction of the diagonal, of the near band
(distances 1–3) and of the rest; and `mlm_vs_sparsity.png`, the paired difference against the
mask's sparsity.
"""

import json
import statistics
import sys
from pathlib import Path

import torch
import yaml

from sparsebert_cli.masks.artifact import load_mask
from sparsebert_cli.reporting.table import MASK_IDENTITY, row_label, row_order


def _row_key(mask: dict) -> tuple[tuple[str, object], ...]:
    """The report's row of a mask config: its name, plus structure and λ for DAM."""
    values = {
        "mask.name": mask["name"],
        "mask.structure": mask["structure"],
        "mask.lam": mask["lam"],
    }
    keys = MASK_IDENTITY if mask["name"] == "dam" else MASK_IDENTITY[:1]
    return tuple((key, values[key]) for key in keys)


def _kept(search_dir: Path) -> dict:
    """Sparsity and kept fractions by distance of a searched mask ([L, H, n, n], True = kept)."""
    mask, meta = load_mask(search_dir / "artifacts")
    n = mask.shape[-1]
    distance = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()

    def kept(where: torch.Tensor) -> float:
        return mask[..., where].float().mean().item()

    return {
        "sparsity": meta["sparsity"]["overall"],
        "diagonal_kept": kept(distance == 0),
        "near_kept": kept((distance >= 1) & (distance <= 3)),
        "far_kept": kept(distance > 3),
    }


def summarize(sweep: Path) -> dict:
    by_row: dict[tuple, dict[int, dict]] = {}
    for manifest_path in sorted(sweep.glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        config = yaml.safe_load((manifest_path.parent / "config.yaml").read_text())
        pretrain = Path(manifest["inputs"]["pretrain"]["run_dir"])
        metrics = json.loads((pretrain / "metrics.json").read_text())
        job_metrics = json.loads((manifest_path.parent / "metrics.json").read_text())
        entry = {
            "pretrain_run": pretrain.name,
            "sparsity": job_metrics["mask/sparsity"],
            "mlm_loss": metrics["eval/mlm_loss"],
            "mlm_accuracy": metrics["eval/mlm_accuracy"],
        }
        if "search" in manifest["inputs"]:
            entry["searched"] = _kept(Path(manifest["inputs"]["search"]["run_dir"]))
        by_row.setdefault(_row_key(config["mask"]), {})[config["seed"]] = entry
    pretrainings = {
        row_label(dict(key), True): by_row[key] for key in sorted(by_row, key=row_order)
    }
    dense = pretrainings["dense"]
    for seeds in pretrainings.values():
        for seed, entry in seeds.items():
            entry["mlm_loss_minus_dense"] = entry["mlm_loss"] - dense[seed]["mlm_loss"]
    return pretrainings


def to_markdown(summary: dict) -> str:
    lines = [
        "| mask | MLM loss − dense (same seed), mean ± std | per seed | MLM accuracy % |",
        "|---|---|---|---|",
    ]
    for label, seeds in summary.items():
        diffs = [seeds[s]["mlm_loss_minus_dense"] for s in sorted(seeds)]
        spread = f" ± {statistics.stdev(diffs):.4f}" if len(diffs) > 1 else ""
        accuracy = statistics.fmean(100 * e["mlm_accuracy"] for e in seeds.values())
        per_seed = ", ".join(f"{d:+.4f}" for d in diffs)
        lines.append(
            f"| {label} | {statistics.fmean(diffs):+.4f}{spread} | {per_seed} | {accuracy:.1f} |"
        )
    lines += ["", "| searched mask | seed | sparsity % | kept: diagonal | D = 1–3 | D > 3 |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for label, seeds in summary.items():
        for seed in sorted(seeds):
            found = seeds[seed].get("searched")
            if found:
                lines.append(
                    f"| {label} | {seed} | {found['sparsity']:.1f} | {found['diagonal_kept']:.2f}"
                    f" | {found['near_kept']:.2f} | {found['far_kept']:.2f} |"
                )
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, seeds in summary.items():
        x = statistics.fmean(e["sparsity"] for e in seeds.values())
        diffs = [e["mlm_loss_minus_dense"] for e in seeds.values()]
        marker = "s" if label.startswith("DAM") else "o"
        ax.errorbar(
            x, statistics.fmean(diffs), yerr=statistics.stdev(diffs), fmt=marker, label=label
        )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    ax.set_xlabel("sparsity % (n = 128)")
    ax.set_ylabel("held-out MLM loss − dense (same seed)")
    ax.set_title("Pre-training with each mask, 800 steps (mean ± std over 2 seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    sweep, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(sweep)
    (out / "mlm_by_seed.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "mlm_by_seed.md").write_text(to_markdown(summary))
    plot(summary, out / "mlm_vs_sparsity.png")
    print(to_markdown(summary))


if __name__ == "__main__":
    main()
