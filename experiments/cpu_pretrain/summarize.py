"""The learning curve of the shared dense pre-training (`experiment=cpu_pretrain`).

Usage: python experiments/cpu_pretrain/summarize.py RUN_DIR OUT_DIR
Reads RUN_DIR/metrics.jsonl (the held-out evaluations every trainer.eval_every steps), metrics.json
and artifacts/attention_profile.json, and writes into OUT_DIR `curve.png` (held-out MLM accuracy and
the best head's neighbour ratio against the step, with the gate's thresholds) and `metrics.json`
(the final held-out metrics, the gate, per-head attention profile and the curve's points).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparsebert_cli.attention.profile import GATE_MLM_ACCURACY, GATE_NEIGHBOUR_RATIO  # noqa: E402


def curve(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if "eval/mlm_accuracy" in r]


def main(run_dir: Path, out_dir: Path) -> None:
    points = curve(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [p["step"] for p in points]
    fig, (acc, ratio) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    acc.plot(steps, [100 * p["eval/mlm_accuracy"] for p in points], marker="o")
    acc.axhline(100 * GATE_MLM_ACCURACY, color="grey", linestyle="--", label="gate")
    acc.set(xlabel="step", ylabel="held-out MLM accuracy (%)", title="masked-token accuracy")
    ratio.plot(steps, [p["eval/attn_neighbour_ratio"] for p in points], marker="o", color="C1")
    ratio.axhline(GATE_NEIGHBOUR_RATIO, color="grey", linestyle="--", label="gate")
    ratio.set(
        xlabel="step",
        ylabel="× uniform mass",
        yscale="log",
        title="best head's mass on offset ±1",
    )
    for axis in (acc, ratio):
        axis.legend()
    fig.savefig(out_dir / "curve.png", dpi=120)
    profile = json.loads((run_dir / "artifacts" / "attention_profile.json").read_text())
    record = {
        "run": run_dir.name,
        "final": json.loads((run_dir / "metrics.json").read_text()),
        "gate": profile["gate"],
        "heads": profile["heads"],
        "curve": [
            {
                k: p[k]
                for k in ("step", "eval/mlm_loss", "eval/mlm_accuracy", "eval/attn_neighbour_ratio")
            }
            for p in points
        ],
    }
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
