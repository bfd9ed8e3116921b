"""End to end: a pre-training killed with SIGKILL resumes from its last complete checkpoint and
ends bit for bit where an uninterrupted run ends; a completed run folder is skipped when asked
again for the same config and refused for another one.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_env, sparsebert
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# run_id is left out of the config hash, so runs a and b are the same job in two folders.
COMMON = (
    "debug=smoke",
    "trainer.max_steps=12",
    "trainer.ckpt_every=4",
    "model.dropout=0.1",
)
THROUGHPUT = "train/tokens_per_s"  # wall-clock dependent: the one key that may differ


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def without_throughput(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != THROUGHPUT}


def kill_after_first_checkpoint(root: Path, run_dir: Path) -> tuple[subprocess.Popen, str]:
    """Start run `a` and SIGKILL it as soon as a complete checkpoint exists."""
    log = root / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparsebert_cli.cli", "pretrain", *COMMON, "run_id=a"],
            cwd=root,
            env={**os.environ, **cli_env(root), "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        checkpoints = run_dir / "checkpoints"
        while proc.poll() is None:
            if any((p / "loop_state.json").exists() for p in checkpoints.glob("step-*")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait()
    return proc, log.read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("resume")
    a, b = root / "runs" / "pretrain" / "a", root / "runs" / "pretrain" / "b"
    killed, killed_log = kill_after_first_checkpoint(root, a)
    state = {
        "killed_code": killed.returncode,
        "killed_log": killed_log,
        "killed_manifest": read_json(a / "manifest.json"),
        "killed_checkpoints": sorted(p.name for p in (a / "checkpoints").glob("step-*")),
    }
    resumed = sparsebert("pretrain", *COMMON, "run_id=a", cwd=root, env=cli_env(root))
    sparsebert("pretrain", *COMMON, "run_id=b", cwd=root, env=cli_env(root))
    return {"root": root, "a": a, "b": b, "resumed": resumed, **state}


def test_killed_run_was_interrupted_mid_way(runs):
    assert runs["killed_code"] == -signal.SIGKILL, runs["killed_log"]
    assert runs["killed_manifest"]["status"] == "running"
    assert runs["killed_checkpoints"][0] in ("step-00000004", "step-00000008")
    assert "step-00000012" not in runs["killed_checkpoints"]


def test_rerun_resumes_and_matches_an_uninterrupted_run_bit_for_bit(runs):
    a, b = runs["a"], runs["b"]
    assert "[sparsebert] resumed from" in runs["resumed"].stdout
    assert read_json(a / "manifest.json")["status"] == "completed"
    assert read_json(a / "manifest.json")["attempts"] == 2
    assert (
        read_json(a / "manifest.json")["config_hash"]
        == read_json(b / "manifest.json")["config_hash"]
    )
    resumed = load_file(str(a / "artifacts" / "model" / "model.safetensors"))
    uninterrupted = load_file(str(b / "artifacts" / "model" / "model.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    different = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert different == []
    assert without_throughput(read_json(a / "metrics.json")) == without_throughput(
        read_json(b / "metrics.json")
    )
    # The metric log has no duplicated or lost steps: the same lines as the uninterrupted run.
    logged = [
        [
            without_throughput(json.loads(line))
            for line in (d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in (a, b)
    ]
    assert logged[0] == logged[1]


def test_rerunning_a_completed_run_skips_it(runs):
    before = read_json(runs["b"] / "manifest.json")
    proc = sparsebert("pretrain", *COMMON, "run_id=b", cwd=runs["root"], env=cli_env(runs["root"]))
    assert f"{runs['b']} already completed with this config: skipped." in proc.stdout
    assert read_json(runs["b"] / "manifest.json") == before
    # resume=never restarts an unfinished run only: the skip says so (it said nothing)
    proc = sparsebert("pretrain", *COMMON, "run_id=b", "resume=never", cwd=runs["root"],
                      env=cli_env(runs["root"]))  # fmt: skip
    assert "skipped (resume=never restarts an unfinished run; to train" in proc.stdout
    assert read_json(runs["b"] / "manifest.json") == before


def test_a_completed_run_whose_outputs_changed_is_not_reused(runs):
    """A completed run with truncated weights was skipped as done, and every stage reading it
    then said "rerun the stage that produced it", which skipped it again."""
    altered = runs["b"].parent / "b-altered"
    shutil.copytree(runs["b"], altered)
    weights = altered / "artifacts" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = sparsebert("pretrain", *COMMON, "run_id=b-altered", cwd=runs["root"],
                      env=cli_env(runs["root"]), check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    assert (
        "but 1 of its outputs are missing or changed since (artifacts/model/model.safetensors)"
        in proc.stderr
    )
    assert "Delete that folder to run the job again" in proc.stderr
    planned = sparsebert("pretrain", *COMMON, "run_id=b-altered", "--dry-run", cwd=runs["root"],
                         env=cli_env(runs["root"]))  # fmt: skip
    assert "completed, but its outputs changed since" in planned.stdout
    assert (
        weights.stat().st_size == 1000
        and read_json(altered / "manifest.json")["status"] == "completed"
    )


def test_another_config_in_a_completed_run_folder_is_refused(runs):
    before = read_json(runs["b"] / "manifest.json")
    proc = sparsebert(
        "pretrain", *COMMON, "trainer.lr=5e-4", "run_id=b", cwd=runs["root"],
        env=cli_env(runs["root"]), check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "different config" in errors[0] and "run_id=" in errors[0]
    assert f"{runs['b']} already holds a 'pretrain' run" in errors[0]
    assert read_json(runs["b"] / "manifest.json") == before  # the completed run stays completed
