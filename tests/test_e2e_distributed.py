"""End to end: `trainer.nproc_per_node=2` relaunches pre-training under torchrun (gloo on CPU);
both ranks share one run folder, and the result equals one process accumulating the same global
batch in two micro-batches of the same size.
"""

import json
import os
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

# No dropout: each rank draws its own noise, so only a deterministic model can match.
# no_diag: a real (if tiny) mask goes through the distributed path.
COMMON = (
    "debug=smoke",
    "trainer.batch_size=8",
    "model.dropout=0",
    "model.attention_dropout=0",
    "mask=no_diag",
)
# The two runs sum the same micro-batch gradients in a different order (all-reduce of two
# averaged gradients vs accumulation of two halves), so weights agree to float rounding only.
ATOL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    env = cli_env(root)
    ddp = sparsebert(
        "pretrain", *COMMON, "trainer.nproc_per_node=2", "run_id=ddp", cwd=root, env=env
    )
    sparsebert(
        "pretrain", *COMMON, "trainer.nproc_per_node=1", "trainer.grad_accum=2", "run_id=single",
        cwd=root, env=env,
    )  # fmt: skip
    pretrain = root / "runs" / "pretrain"
    return {"root": root, "ddp": pretrain / "ddp", "single": pretrain / "single", "proc": ddp}


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_ddp_run_is_one_completed_folder_with_world_size_2(runs):
    assert "launching 2 processes with torchrun" in runs["proc"].stdout
    # the status lines come from rank 0 alone (each rank printed its own)
    assert runs["proc"].stdout.count("pre-training data data=") == 2  # started, done
    folders = sorted(p.name for p in (runs["root"] / "runs" / "pretrain").iterdir())
    assert folders == ["ddp", "single"]
    found = manifest(runs["ddp"])
    assert (found["status"], found["world_size"], found["attempts"]) == ("completed", 2, 1)
    assert manifest(runs["single"])["world_size"] == 1
    assert (runs["ddp"] / "artifacts" / "model" / "model.safetensors").is_file()


def test_ddp_weights_equal_gradient_accumulation_in_one_process(runs):
    assert manifest(runs["single"])["status"] == "completed"
    ddp = load_file(str(runs["ddp"] / "artifacts" / "model" / "model.safetensors"))
    single = load_file(str(runs["single"] / "artifacts" / "model" / "model.safetensors"))
    assert ddp.keys() == single.keys()
    off = {
        k: (ddp[k] - single[k]).abs().max().item()
        for k in ddp
        if not torch.allclose(ddp[k], single[k], rtol=0, atol=ATOL)
    }
    assert off == {}
    ddp_metrics = json.loads((runs["ddp"] / "metrics.json").read_text())
    single_metrics = json.loads((runs["single"] / "metrics.json").read_text())
    assert ddp_metrics["eval/mlm_loss"] == pytest.approx(single_metrics["eval/mlm_loss"], abs=1e-4)


def test_ddp_logs_the_loss_of_the_global_batch(runs):
    """Each rank computes the loss of its half of the batch: the log showed rank 0's half."""

    def losses(run_dir: Path) -> list[float]:
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [row["train/loss"] for row in rows if "train/loss" in row]

    assert len(losses(runs["ddp"])) >= 2
    assert losses(runs["ddp"]) == pytest.approx(losses(runs["single"]), abs=1e-4)


def test_a_failing_ddp_run_says_why_in_one_line_without_tracebacks(tmp_path):
    """torchrun added a ChildFailedError traceback (~35 lines) to the ranks' own error lines."""
    proc = sparsebert("pretrain", *COMMON, "trainer.nproc_per_node=2", "trainer.lr=1e30",
                      cwd=tmp_path, env=cli_env(tmp_path), check=False)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [text for text in proc.stderr.splitlines() if text.startswith("error:")]
    assert "distributed run in" in line and "the loss became nan" in line
    assert "resumes from" not in line  # the same command would fail the same way


def test_a_dam_search_to_a_target_after_a_head_warm_up_runs_under_ddp(tmp_path):
    """The target's multipliers and (during the warm-up) α are read only by the penalty: added
    outside the forward that DDP wraps, their gradients stopped the first step ("marked ready
    twice")."""
    sparsebert(
        "search", "debug=smoke", "mask.lam=0", "mask.target_sparsity=0.5",
        "mask.head_warmup=2", "trainer.log_every=1", "trainer.nproc_per_node=2", "run_id=dam",
        cwd=tmp_path, env=cli_env(tmp_path),
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "search" / "dam"
    assert (manifest(run_dir)["status"], manifest(run_dir)["world_size"]) == ("completed", 2)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "mask/lambda1" in row] == [1, 2, 3, 4]


def test_a_distributed_job_refused_for_another_configs_folder_leaves_that_run_as_it_was(tmp_path):
    """The ranks refused the folder, but the launcher took their failure for its own and marked
    the other config's interrupted run failed, with that run's old error."""
    env = cli_env(tmp_path)
    sparsebert("pretrain", *COMMON, "run_id=other", cwd=tmp_path, env=env)
    other = tmp_path / "runs" / "pretrain" / "other"
    stopped = {**manifest(other), "status": "interrupted", "error": "stopped by SIGINT"}
    (other / "manifest.json").write_text(json.dumps(stopped))
    proc = sparsebert("pretrain", *COMMON, "mask=dense", "run_id=other",
                      "trainer.nproc_per_node=2", cwd=tmp_path, env=env, check=False)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "already holds a 'pretrain' run of a different config" in proc.stderr
    assert "launching 2 processes" not in proc.stdout
    assert manifest(other) == stopped


def _rank_pid(run_dir: Path, rank: int) -> int | None:
    """The pid of local rank `rank` of the torchrun job running in `run_dir`."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run_dir).encode() in cmdline and f"LOCAL_RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank in /proc")
def test_a_rank_killed_by_a_signal_is_named_as_the_cause(tmp_path):
    """A SIGKILLed rank was reported as the survivor's symptom, gloo's "Connection reset by
    peer" (found by a launcher review); the rerun resumes from the checkpoint it names."""
    run_dir = tmp_path / "runs" / "pretrain" / "k"
    args = [sys.executable, "-m", "sparsebert_cli.cli", "pretrain", *COMMON, "run_id=k",
            "trainer.nproc_per_node=2", "trainer.max_steps=40", "trainer.ckpt_every=2"]  # fmt: skip
    job = subprocess.Popen(args, cwd=tmp_path, env={**os.environ, **cli_env(tmp_path)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((run_dir / "checkpoints").glob("step-*/loop_state.json")):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.05)
    os.kill(_rank_pid(run_dir, 1), signal.SIGKILL)
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 1 and "Traceback" not in stderr.split("error: distributed run")[-1]
    (line,) = [text for text in stderr.splitlines() if text.startswith("error:")]
    assert "rank 1 was killed by SIGKILL (then:" in line, line
    assert "; the same command resumes from step-" in line


def test_a_completed_distributed_run_whose_outputs_changed_is_refused_before_torchrun(runs):
    """Its ranks refused it, each in its own line, and the job's one error said only "torchrun
    exited with status 1"."""
    import shutil

    altered = runs["ddp"].parent / "ddp-altered"
    shutil.copytree(runs["ddp"], altered)
    (altered / "artifacts" / "model" / "model.safetensors").write_bytes(b"cut")
    proc = sparsebert("pretrain", *COMMON, "trainer.nproc_per_node=2", "run_id=ddp-altered",
                      cwd=runs["root"], env=cli_env(runs["root"]), check=False)  # fmt: skip
    assert proc.returncode == 1 and "launching 2 processes" not in proc.stdout
    assert "of its outputs are missing or changed since" in proc.stderr
