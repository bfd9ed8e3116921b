"""Ctrl-C and SIGTERM, and resuming without planning ahead.

A stopped job exits 130 (SIGINT) or 143 (SIGTERM) with one line naming the resume command and no
traceback; its manifest says `interrupted` with the checkpoint written on the way out (default
settings: no ckpt_every). Rerunning the same command without run_id= finds the run by its config
hash, says so, and finishes it with the weights of an undisturbed run. Leftover temporary files of
killed writers are removed by the rerun.
"""

import signal
import time

import pytest
from conftest import compose_cfg, sparsebert
from robust_helpers import TINY, TINY_TASK, Job, assert_same_weights, losses, read_json, stable

from sparsebert_cli import interrupt, launch, modeling, runs
from sparsebert_cli.training.loop import AUTO_CKPT_SECONDS, checkpoint_due

# A tiny step takes ~50 ms: 100 steps leave a test about 7 s (with the final evaluation) to send
# its signal while the job trains, also on a loaded machine.
STEPS = 100
ARGS = ("pretrain", *TINY, f"trainer.max_steps={STEPS}", "trainer.log_every=1")


def stop_at_step(workdir, sig: signal.Signals, step: int = 3) -> tuple[Job, int]:
    job = Job(*ARGS, cwd=workdir)
    assert job.wait_for(f"step {step}/{STEPS}"), job.output
    job.proc.send_signal(sig)
    return job, job.finish()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_job_marks_its_run_interrupted_with_a_checkpoint_and_says_how_to_resume(
    workdir, sig, code
):
    job, exit_code = stop_at_step(workdir, sig)
    out = job.output
    assert exit_code == code, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    (line,) = [text for text in out.splitlines() if text.startswith("interrupted")]
    (run_dir,) = (workdir / "runs" / "pretrain").iterdir()
    manifest = runs.load_manifest(run_dir)
    assert manifest["status"] == "interrupted" and manifest["error"] == f"stopped by {sig.name}"
    checkpoint = manifest["checkpoint"]
    assert checkpoint and checkpoint in line and f"run_id={run_dir.name}" in line
    done = max(step for step, _, _ in losses(run_dir))
    assert checkpoint.endswith(f"step-{done:08d}")  # the last finished step, not an earlier one


@pytest.mark.slow
def test_a_stopped_pipeline_says_its_steps_resume_from_their_checkpoints(workdir):
    """The pipeline's own folder holds no checkpoint; its interrupted step does."""
    job = Job("pipeline", *TINY_TASK, "mask=no_diag", f"pipeline.pretrain=['trainer.max_steps={STEPS}']",
              "trainer.log_every=1", cwd=workdir)  # fmt: skip
    assert job.wait_for(f"step 3/{STEPS}"), job.output
    job.proc.send_signal(signal.SIGINT)
    assert job.finish() == 130, job.output
    (line,) = [text for text in job.output.splitlines() if text.startswith("interrupted")]
    assert "the interrupted one resumes from its last checkpoint" in line and "step 0" not in line


@pytest.mark.slow
def test_a_rerun_without_run_id_resumes_the_interrupted_run_bit_for_bit(workdir):
    sparsebert(*ARGS, "run_id=reference", cwd=workdir)
    job, code = stop_at_step(workdir, signal.SIGINT, step=7)
    assert code == 130, job.output
    (victim,) = [p for p in (workdir / "runs" / "pretrain").iterdir() if p.name != "reference"]
    leftover = victim / "artifacts" / ".predictions.1-abc.tmp.tsv"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_text("half written")
    proc = sparsebert(*ARGS, cwd=workdir)
    assert f"resuming the unfinished run {victim}" in proc.stdout.replace("\n", " ")
    assert f"run_id={victim.name}" in proc.stdout
    assert "resumed from" in proc.stdout
    assert sorted(p.name for p in (workdir / "runs" / "pretrain").iterdir()) == sorted(
        ["reference", victim.name]
    )  # no new folder
    manifest = runs.load_manifest(victim)
    assert manifest["status"] == "completed" and manifest["attempts"] == 2
    assert not leftover.exists()
    reference = workdir / "runs" / "pretrain" / "reference"
    assert_same_weights(
        reference / "artifacts" / "model" / "model.safetensors",
        victim / "artifacts" / "model" / "model.safetensors",
    )
    assert losses(victim) == losses(reference)
    assert stable(read_json(victim / "metrics.json")) == stable(
        read_json(reference / "metrics.json")
    )
    assert not (victim / "checkpoints").exists()  # default checkpoints go once the run completes


def test_a_stop_after_the_last_step_keeps_the_checkpoints_the_rerun_resumes_from(
    workdir, monkeypatch, capsys
):
    """Stopped while the stage writes its artifacts (training done, run not completed): the
    default checkpoints stay until the run completes, so the rerun does not start at step 0."""
    cfg = compose_cfg("pretrain", *(a for a in TINY if "num_threads" not in a),
                      "trainer.max_steps=10")  # fmt: skip
    run_dir = workdir / "runs" / "pretrain" / "stopped"
    save_model = modeling.save_checkpoint

    def stopped(*args, **kwargs):
        raise interrupt.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(modeling, "save_checkpoint", stopped)
    with pytest.raises(interrupt.Interrupted):
        launch.execute(cfg, run_dir, "sparsebert pretrain")
    manifest = runs.load_manifest(run_dir)
    assert manifest["status"] == "interrupted"
    assert manifest["checkpoint"].endswith("step-00000009")  # the last one before the end
    monkeypatch.setattr(modeling, "save_checkpoint", save_model)
    launch.execute(cfg, run_dir, "sparsebert pretrain")
    assert "(step 9/10)" in capsys.readouterr().out
    assert runs.load_manifest(run_dir)["status"] == "completed"
    assert not (run_dir / "checkpoints").exists()


def _manifest(run_dir, status: str, chash: str, started: float) -> None:
    runs.atomic_write_json(
        run_dir / runs.MANIFEST,
        {"stage": "pretrain", "status": status, "config_hash": chash, "started_at": started},
    )


def test_only_an_unfinished_unlocked_run_of_the_same_config_is_resumed(tmp_path):
    root = tmp_path / "pretrain"
    for name, status, chash in [
        ("done", "completed", "h"),
        ("other", "interrupted", "other-hash"),
        ("old", "failed", "h"),
        ("new", "interrupted", "h"),
        ("live", "running", "h"),
        ("pipeline-h", "interrupted", "h"),
    ]:
        _manifest(root / name, status, chash, started=time.time())
    with runs.hold(root / "live"):
        assert runs.unfinished_run(tmp_path, "pretrain", "h") == root / "new"
    assert runs.unfinished_run(tmp_path, "pretrain", "h") == root / "live"  # lock released
    assert runs.unfinished_run(tmp_path, "pretrain", "nothing") is None


def test_leftover_temporary_files_are_removed_when_a_run_starts_again(tmp_path):
    run_dir = tmp_path / "pretrain" / "r"
    _manifest(run_dir, "interrupted", "h", started=0.0)
    left = [
        run_dir / ".metrics.4242-0123456789ab.tmp.json",
        run_dir / "artifacts" / "figures" / ".mask.77-ab.tmp.png",
        run_dir / ".best_model.12-0123456789ab.tmp.safetensors",
    ]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    (run_dir / "checkpoints" / ".step-00000003.tmp").mkdir(parents=True)
    kept = run_dir / "artifacts" / "figures" / "mask.png"
    kept.write_bytes(b"whole")
    runs.Run.start(run_dir, "pretrain", {"seed": 0}, "h", "sparsebert pretrain")
    assert not any(p.exists() for p in left)
    assert not (run_dir / "checkpoints" / ".step-00000003.tmp").exists()
    assert kept.read_bytes() == b"whole"


@pytest.mark.parametrize(
    ("ckpt_every", "total", "due"),
    [
        (0, 100, [10, 20, 30, 40, 50, 60, 70, 80, 90]),  # every 10 %, not at the very end
        (0, 5, [1, 2, 3, 4]),
        (7, 20, [7, 14]),
    ],
)
def test_checkpoints_are_written_by_default_every_tenth_of_the_run(ckpt_every, total, due):
    found = [d for d in range(1, total + 1) if checkpoint_due(ckpt_every, d, total, 0.0, True)]
    assert found == due


def test_default_checkpoints_are_also_written_every_few_minutes_in_one_process():
    assert checkpoint_due(0, 3, 1000, AUTO_CKPT_SECONDS, solo=True)
    assert not checkpoint_due(0, 3, 1000, AUTO_CKPT_SECONDS, solo=False)  # DDP ranks must agree


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_a_stopped_ddp_job_stops_its_ranks_after_the_same_step(workdir, sig, code):
    """torchrun starts the ranks in their own sessions: SIGTERM to the job killed torchrun and
    left the ranks training on (and completing) unsupervised, and the job said "stopped before
    the run started". Now the ranks stop after the same step, checkpoint it and exit — also when
    the job itself is killed (torchrun gets SIGTERM when its parent dies)."""
    ddp = (*ARGS[:-2], "trainer.max_steps=3000", "trainer.log_every=1", "trainer.nproc_per_node=2",
           "model.dropout=0", "model.attention_dropout=0")  # fmt: skip
    job = Job(*ddp, "run_id=ddp", cwd=workdir)
    assert job.wait_for("step 5/3000"), job.output
    job.proc.send_signal(sig)
    assert job.finish() == code, job.output
    run_dir = workdir / "runs" / "pretrain" / "ddp"
    deadline = time.monotonic() + 60  # a killed job: the ranks mark the run as they stop
    while (
        read_json(run_dir / "manifest.json")["status"] == "running" and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "interrupted", manifest
    if sig != signal.SIGKILL:  # the job saw its ranks stop and says where to resume
        (line,) = [text for text in job.output.splitlines() if text.startswith("interrupted")]
        assert manifest["checkpoint"] in line
        assert "Traceback" not in job.output, job.output  # torchrun's own, for its stop
    logged = (run_dir / "metrics.jsonl").read_text()
    time.sleep(3)  # no rank left behind writes on
    assert (run_dir / "metrics.jsonl").read_text() == logged
    assert read_json(run_dir / "manifest.json") == manifest
    step = int(manifest["checkpoint"].rsplit("-", 1)[1])
    assert max(s for s, _, _ in losses(run_dir)) == step  # the checkpoint is the last step taken
