"""The target-sparsity table (`sparsebert search -m experiment=target_table`).

Usage: python experiments/target_table/summarize.py SWEEP_DIR OUT_DIR
Reads each completed search of SWEEP_DIR (artifacts/mask.json: the target, the sparsity of the mask
handed on, of its sign mask 1[α > 0] and the expected sparsity of the relaxed mask; metrics.json:
the held-out MLM evaluation; manifest.json: the run time) and writes OUT_DIR/summary.json (one
record per search) and summary.md (the README's table).
"""

import json
import sys
from pathlib import Path

STRUCTURES = {"unstructured": "DAM_u", "structured": "DAM_s", "block": "block DAM"}


def record(run_dir: Path) -> dict:
    meta = json.loads((run_dir / "artifacts" / "mask.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {
        "run": run_dir.name,
        "structure": meta["params"]["structure"],
        "target": meta["target_sparsity"],
        "handed_on": meta["sparsity"]["overall"],
        "sign": meta["sign_sparsity"],
        "expected": meta["expected_sparsity"],
        "mlm_accuracy": 100 * metrics["eval/mlm_accuracy"],
        "mlm_loss": metrics["eval/mlm_loss"],
        "uses_attention": bool(metrics["eval/uses_attention"]),
        "duration_s": manifest["duration_s"],
        "git_sha": manifest.get("git_sha"),
    }


def table(records: list[dict]) -> str:
    cell = {(r["target"], r["structure"]): r for r in records}
    if len(cell) < len(records):
        raise SystemExit("two searches of one target and structure: summarize one sweep at a time")
    targets = sorted({r["target"] for r in records})
    head = " | ".join(f"{name}: handed on / sign mask / MLM acc." for name in STRUCTURES.values())
    lines = [f"| target | {head} |", "|---" * (len(STRUCTURES) + 1) + "|"]
    for target in targets:
        cells = []
        for structure in STRUCTURES:
            r = cell.get((target, structure))
            cells.append(
                "–"
                if r is None
                else f"{r['handed_on']:.1f} / {r['sign']:.1f} / {r['mlm_accuracy']:.1f}"
            )
        lines.append(f"| {target:.0f} % | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(sweep_dir: Path, out_dir: Path) -> None:
    runs = sorted(p.parent.parent for p in sweep_dir.glob("*/artifacts/mask.json"))
    records = sorted(
        (record(run) for run in runs if (run / "metrics.json").is_file()),
        key=lambda r: (r["target"], list(STRUCTURES).index(r["structure"])),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(records, indent=2) + "\n")
    (out_dir / "summary.md").write_text(
        "Sparsity % of the mask each search hands on / of its sign mask 1[α > 0] / held-out MLM "
        "accuracy % of the search's model.\n\n" + table(records)
    )
    print(table(records))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
