"""Concurrency: four pipelines at once on one runs folder and cache, through the joblib launcher
and as four separate processes. Every shared upstream run is computed once (its manifest counts
one attempt), every job has its own downstream folders, and every manifest is whole."""

from pathlib import Path

import pytest
from conftest import sparsebert
from robust_helpers import TINY, TINY_SEARCH, Job

from sparsebert_cli import runs

# Four jobs that differ only in the task: search and pretrain are shared, finetune is not.
BASE = TINY
JOBS = [("polarity", 24), ("polarity", 32), ("lee_sts", 24), ("lee_sts", 32)]


def folders(runs_dir: Path, step: str) -> list[Path]:
    return sorted(p for p in (runs_dir / step).glob("pipeline-*") if p.is_dir())


def check_shared_runs(runs_dir: Path, pipeline_dirs: list[Path], shared: tuple[str, ...]) -> None:
    for path in runs_dir.rglob(runs.MANIFEST):
        assert runs.read_json(path)["status"] == "completed"  # whole (parses) and finished
    assert len(pipeline_dirs) == 4
    inputs = [runs.load_manifest(d)["inputs"] for d in pipeline_dirs]
    for step in shared:
        (only,) = folders(runs_dir, step)
        assert runs.load_manifest(only)["attempts"] == 1  # computed once
        assert {i[step]["run_dir"] for i in inputs} == {str(only)}
    for step in ("finetune", "evaluate"):
        own = folders(runs_dir, step)
        assert len(own) == 4
        assert {i[step]["run_dir"] for i in inputs} == {str(d) for d in own}  # one per job
        assert all(runs.load_manifest(d)["attempts"] == 1 for d in own)


@pytest.mark.slow
def test_four_pipelines_through_joblib_share_upstream_runs(workdir):
    sparsebert(
        "pipeline", "-m", *TINY_SEARCH, "mask=dam", "task=polarity,lee_sts", "task.seq_len=24,32",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "sweep_name=four", cwd=workdir,
    )  # fmt: skip
    runs_dir = workdir / "runs"
    sweep = runs_dir / "pipeline" / "multirun" / "four"
    pipeline_dirs = sorted(p.parent for p in sweep.glob("*/manifest.json"))
    check_shared_runs(runs_dir, pipeline_dirs, ("search", "pretrain"))


@pytest.mark.slow
def test_four_separate_pipeline_processes_share_upstream_runs_and_cache(workdir):
    cache = workdir / "fresh-cache"
    env = {"SPARSEBERT_CACHE_DIR": str(cache)}
    jobs = [
        Job("pipeline", *BASE, "mask=no_diag", f"task={task}", f"task.seq_len={n}", f"run_id=j{i}",
            cwd=workdir, env=env)
        for i, (task, n) in enumerate(JOBS)
    ]  # fmt: skip
    codes = [job.finish() for job in jobs]
    assert codes == [0, 0, 0, 0], [job.output for job in jobs]
    runs_dir = workdir / "runs"
    pipeline_dirs = [runs_dir / "pipeline" / f"j{i}" for i in range(4)]
    check_shared_runs(runs_dir, pipeline_dirs, ("pretrain",))
    # The cache was built once too: one folder per content key, no half-built leftovers.
    for kind in ("corpus", "pretraining"):
        built = [p.name for p in (cache / kind).iterdir() if p.is_dir()]
        assert len(built) == 1 and not built[0].endswith(".partial"), built
