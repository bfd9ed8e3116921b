"""Faults: SIGKILL at seeded points of a training run and of a pipeline, full disk, read-only folder.

After every kill the checkpoints on disk are whole, a killed run is never accepted as an upstream
run, and re-running the same command finishes with bitwise the same weights and metrics as an
undisturbed run. Kill points are events read from the run itself (its per-step log lines and the
files it creates), never wall-clock delays.
"""

import hashlib
import random
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import sparsebert
from robust_helpers import (
    NO_SCALER,
    TINY,
    TINY_TASK,
    Job,
    assert_checkpoints_whole,
    assert_same_weights,
    losses,
    poll_until,
    read_json,
    stable,
)

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError

STEPS = 14
SEED = 20210718  # the kill schedule's seed
TRAIN = [*TINY, f"trainer.max_steps={STEPS}", "trainer.ckpt_every=1", "trainer.log_every=1"]
KILLS_SURVIVED: list[str] = []  # filled by the tests, printed for the README counts


def kill_schedule(seed: int = SEED) -> list[tuple[str, int]]:
    """Nine (kind, step) kill points inside training, in step order, then one in the artifact write.

    "step": killed once checkpoint k is on disk, i.e. while step k + 1 computes. "ckpt": killed as
    soon as the temporary folder of checkpoint k appears, i.e. while it is being written.
    """
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(1, STEPS), 9))
    return [(rng.choice(("step", "ckpt")), k) for k in steps] + [("artifact", STEPS)]


def test_the_schedule_covers_every_kind_of_kill_point():
    schedule = kill_schedule()
    kinds = [kind for kind, _ in schedule]
    assert len(schedule) == 10 and kinds.count("artifact") == 1
    assert kinds.count("step") >= 3 and kinds.count("ckpt") >= 3
    assert [k for _, k in schedule] == sorted({k for _, k in schedule})


@pytest.mark.slow
def test_resume_after_ten_seeded_kills_equals_an_undisturbed_run(workdir):
    sparsebert("pretrain", *TRAIN, "run_id=reference", cwd=workdir)
    reference = workdir / "runs" / "pretrain" / "reference"
    victim = workdir / "runs" / "pretrain" / "victim"
    ckpt_dir = victim / "checkpoints"
    args = ("pretrain", *TRAIN, "run_id=victim")
    landed_mid_write = 0
    for kind, k in kill_schedule():
        job = Job(*args, cwd=workdir)
        if kind == "artifact":
            assert job.wait_for(f"step {k}/{STEPS}"), job.output
            poll_until(lambda: (victim / "artifacts").exists(), job.proc)
        else:
            assert job.wait_for(f"step {k}/{STEPS}"), job.output
            name = f"step-{k:08d}"
            target = ckpt_dir / (name if kind == "step" else f".{name}.tmp")
            poll_until(lambda t=target, n=name: t.exists() or (ckpt_dir / n).exists(), job.proc)
        job.kill()
        if kind == "ckpt" and (ckpt_dir / f".step-{k:08d}.tmp").exists():
            landed_mid_write += 1
        # Whatever the kill interrupted, every checkpoint that looks complete is complete ...
        names = assert_checkpoints_whole(ckpt_dir)
        if kind == "step":
            assert names[-1] == f"step-{k:08d}"
        # ... and the killed run is never taken as a finished upstream run.
        assert runs.load_manifest(victim)["status"] == "running"
        with pytest.raises(SparseBertError, match="is not completed"):
            runs.resolve("pretrain", str(victim), workdir / "runs")
        KILLS_SURVIVED.append(f"pretrain:{kind}@{k}")
    print(f"kill points survived: {len(KILLS_SURVIVED)}; ckpt kills mid-write: {landed_mid_write}")
    final = sparsebert(*args, cwd=workdir)
    assert f"resumed from {ckpt_dir / f'step-{STEPS:08d}'}" in final.stdout
    manifest = runs.load_manifest(victim)
    assert manifest["status"] == "completed" and manifest["attempts"] == 11
    assert_same_weights(
        reference / "artifacts/model/model.safetensors",
        victim / "artifacts/model/model.safetensors",
    )
    assert stable(read_json(victim / "metrics.json")) == stable(
        read_json(reference / "metrics.json")
    )
    assert losses(victim) == losses(reference)


@pytest.mark.slow
def test_pipeline_killed_between_stages_reruns_to_the_same_result(workdir, monkeypatch):
    args = ("pipeline", *TINY_TASK, "mask=no_diag", "run_id=p")
    reference_runs = workdir / "reference-runs"
    sparsebert(*args, cwd=workdir, env={"SPARSEBERT_RUNS_DIR": str(reference_runs)})
    runs_dir = workdir / "runs"
    for next_step in ("finetune", "evaluate"):
        job = Job(*args, cwd=workdir)
        assert job.wait_for(f"pipeline step {next_step}:"), job.output
        job.kill()
        assert runs.load_manifest(runs_dir / "pipeline" / "p")["status"] == "running"
        folder = step_folder(runs_dir, next_step)
        assert runs.load_manifest(folder) is None  # killed before the step started
        KILLS_SURVIVED.append(f"pipeline:before-{next_step}")
    done = sparsebert(*args, cwd=workdir)
    assert done.stdout.count("already completed with this config: skipped") == 2
    for step in ("pretrain", "finetune", "evaluate"):
        mine, theirs = step_folder(runs_dir, step), step_folder(reference_runs, step)
        if step == "pretrain":  # downstream hashes include the upstream folder's path
            assert mine.name == theirs.name
        manifest = runs.load_manifest(mine)
        assert manifest["status"] == "completed" and manifest["attempts"] == 1
        assert stable(read_json(mine / "metrics.json")) == stable(
            read_json(theirs / "metrics.json")
        )
    for step in ("pretrain", "finetune"):
        weights = "artifacts/model/model.safetensors"
        assert_same_weights(
            step_folder(runs_dir, step) / weights, step_folder(reference_runs, step) / weights
        )


def step_folder(runs_dir: Path, step: str) -> Path:
    """The one content-hash folder of a pipeline step (its .lock file beside it is not one)."""
    (folder,) = [p for p in (runs_dir / step).glob("pipeline-*") if p.is_dir()]
    return folder


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _file_size_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _can_make_immutable(folder: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    probe = folder / ".immutable-probe"
    probe.mkdir()
    ok = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
    if ok:
        try:
            (probe / "x").touch()
            ok = False  # root-without-immutable or a filesystem that ignores the flag
        except OSError:
            pass
        subprocess.run(["chattr", "-i", str(probe)], check=True)
    shutil.rmtree(probe)
    return ok


@pytest.mark.slow
def test_full_disk_and_read_only_folder_fail_clearly_and_keep_earlier_checkpoints(workdir):
    args = (
        "pretrain",
        *TINY,
        "trainer.max_steps=40",
        "trainer.ckpt_every=1",
        "trainer.log_every=1",
    )
    args = (*args, "run_id=disk")
    run_dir = workdir / "runs" / "pretrain" / "disk"
    ckpt_dir = run_dir / "checkpoints"
    job = Job(*args, cwd=workdir)
    assert job.wait_for("step 3/40"), job.output
    poll_until(lambda: (ckpt_dir / "step-00000003").exists(), job.proc)
    job.kill()
    # What a writer killed mid-way leaves (a `.step-*.deleting` rotation) is removed by the rerun
    # (runs.remove_leftovers), so only the finished checkpoints must stay byte-identical.
    before = {k: v for k, v in _digests(ckpt_dir).items() if not k.startswith(".")}
    # The run may get past step 3 before the kill lands: take the checkpoints it left.
    kept = assert_checkpoints_whole(ckpt_dir)
    assert len(kept) >= 2, kept
    last = int(kept[-1].split("-")[1])

    # A full disk: files may not grow past 1 MiB (a checkpoint's weights are 4 MiB).
    full = subprocess.run(
        [*Job.command(*args)], cwd=workdir, capture_output=True, text=True,
        preexec_fn=_file_size_limit(1 << 20), env=Job.environment(),
    )  # fmt: skip
    out = full.stdout + full.stderr
    assert full.returncode == 1, out
    assert "Traceback" not in out, out
    assert f"error: cannot write the checkpoint {ckpt_dir / f'step-{last + 1:08d}'}" in out
    assert "File too large" in out and ", ".join(kept) in out
    assert _digests(ckpt_dir) == before  # earlier checkpoints intact, no partial folder left
    manifest = runs.load_manifest(run_dir)
    assert manifest["status"] == "failed" and "cannot write the checkpoint" in manifest["error"]

    # An unwritable checkpoints folder (immutable, so that it holds even for root).
    if _can_make_immutable(workdir):
        subprocess.run(["chattr", "+i", str(ckpt_dir)], check=True)
        try:
            locked = sparsebert(*args, cwd=workdir, check=False)
        finally:
            subprocess.run(["chattr", "-i", str(ckpt_dir)], check=True)
        out = locked.stdout + locked.stderr
        assert locked.returncode == 1 and "Traceback" not in out, out
        assert "Operation not permitted" in out and ", ".join(kept) in out
        assert _digests(ckpt_dir) == before
        KILLS_SURVIVED.append("pretrain:read-only")

    done = sparsebert(*args, cwd=workdir)
    assert f"resumed from {ckpt_dir / kept[-1]} (step {last}/40)" in done.stdout
    assert runs.load_manifest(run_dir)["status"] == "completed"


# --- what a kill can leave behind, planted deterministically -------------------------------------


def test_partial_checkpoint_folders_are_never_taken_as_complete(tmp_path):
    import torch

    from sparsebert_cli.training import checkpoint

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    first = checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, NO_SCALER, {})
    shutil.copytree(first, tmp_path / ".step-00000002.tmp")  # killed before the rename
    data = (first / "model.safetensors").read_bytes()
    (tmp_path / ".step-00000002.tmp" / "model.safetensors").write_bytes(data[:100])
    shutil.copytree(first, tmp_path / "step-00000003")  # killed while being deleted
    (tmp_path / "step-00000003" / "training_state.pt").unlink()
    assert checkpoint.complete_checkpoints(tmp_path) == [first]
    # The next save replaces the leftovers; only whole step folders remain, the newest KEEP.
    for step in (2, 3, 4):
        checkpoint.save_checkpoint(tmp_path, step, model, optimizer, scheduler, NO_SCALER, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000003", "step-00000004"]


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    from omegaconf import OmegaConf

    from sparsebert_cli.training.logging import MetricLogger

    lines = ['{"step": 1, "train/loss": 2.0}', '{"step": 2, "train/loss": 1.5}', '{"step": 3, "tr']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    logger = MetricLogger(tmp_path, OmegaConf.create({"name": "none"}), {"stage": "pretrain"}, 9)
    logger.truncate_after(2)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines[:2]


def test_wandb_online_without_an_api_key_is_a_clear_error(tmp_path, monkeypatch):
    """`logger=wandb logger.mode=online` without a key ended in 30 lines of W&B traceback."""
    from omegaconf import OmegaConf

    from sparsebert_cli.training.logging import MetricLogger

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = OmegaConf.create(
        {
            "name": "wandb",
            "mode": "online",
            "project": "p",
            "entity": None,
            "group": "g",
            "tags": [],
        }
    )
    with pytest.raises(
        SparseBertError, match=r"logger.mode=online could not start a W&B run .*run `wandb login`"
    ):
        MetricLogger(tmp_path, cfg, {"stage": "pretrain"}, 9)
