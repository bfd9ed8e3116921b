"""Run folders stay inside the runs folder and belong to one job at a time.

Names that become folders (run_id, sweep_name) are one safe folder name; a folder that holds
files but no manifest is never taken as a run; a folder held by a live job is refused with that
job's pid and host (a sweep waits instead); code cannot come in through the command line.
"""

import os
import platform
import threading
import time
from pathlib import Path

import pytest
from conftest import sparsebert
from robust_helpers import TINY, assert_clean_error

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders): to prove nothing changed."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(
    "value",
    ["..", ".", "", "../../x", "a/b", "/tmp/x", ".hidden", "x" * 101, "a\\b", "tab\tname", "é"],
)
def test_names_that_are_not_one_safe_folder_name_are_refused(value):
    for key in runs.NAME_KEYS:
        with pytest.raises(SparseBertError, match=f"{key}=.* is not a usable folder name"):
            runs.check_name(key, value)


@pytest.mark.parametrize("value", ["20261129-151218-603248", "my-run_1.2", "mask=dam,seed=0", "_x"])
def test_ordinary_names_are_accepted(value):
    assert runs.check_name("run_id", value) == value


@pytest.mark.parametrize(
    "args",
    [
        ["run_id=../../x"],
        ["run_id=../../../x"],
        ["run_id=."],
        ["run_id="],
        ["run_id=${oc.env:HOME}"],
        ["-m", "sweep_name=../../../x", "seed=0,1"],
        ["-m", "run_id=ok,../x"],
        ["hydra.run.dir=../elsewhere"],
        ["-m", "hydra.sweep.dir=/tmp/elsewhere", "seed=0,1"],
        ["paths.runs_dir=" + "x" * 300],
        ["-m", "paths.runs_dir=runs,runs/" + "x" * 256, "seed=0"],
    ],
)
def test_run_folders_outside_the_runs_folder_are_refused_before_anything_is_written(workdir, args):
    (workdir / "keep.txt").write_text("user file")
    before = tree(workdir)
    proc = sparsebert("pretrain", *TINY, *args, cwd=workdir, check=False)
    out = assert_clean_error(proc, "error:")
    assert out.count("error:") == 1, out
    reasons = ("usable folder name", "plain name", "run folders are", "file systems take at most")
    assert any(why in out for why in reasons), out
    assert tree(workdir) == before  # nothing created, nothing changed


def test_a_folder_with_files_but_no_manifest_is_never_taken_as_a_run(workdir):
    mine = workdir / "runs" / "pretrain" / "mine"
    mine.mkdir(parents=True)
    (mine / "config.yaml").write_text("precious: true\n")
    (mine / "model.safetensors").write_bytes(b"weights")
    before = tree(workdir)
    proc = sparsebert("pretrain", *TINY, "run_id=mine", cwd=workdir, check=False)
    assert_clean_error(proc, "is not a sparsebert run folder", "model.safetensors")
    assert tree(workdir) == before


def test_a_run_id_refused_for_a_config_error_is_free_for_the_fixed_config(workdir):
    """The refused job is marked failed (a sweep's report lists it), but nothing ran there: the
    corrected command may take the same run_id."""
    proc = sparsebert("pretrain", *TINY, "trainer.lr=0", "run_id=mine", cwd=workdir, check=False)
    assert_clean_error(proc, "trainer.lr=0.0 must be > 0")
    manifest = workdir / "runs" / "pretrain" / "mine" / "manifest.json"
    assert runs.load_manifest(manifest.parent)["status"] == "failed"
    sparsebert("pretrain", *TINY, "trainer.max_steps=1", "run_id=mine", cwd=workdir)
    assert runs.load_manifest(manifest.parent)["status"] == "completed"


def test_a_folder_held_by_a_live_job_is_refused_with_its_pid_and_host(workdir):
    busy = workdir / "runs" / "pretrain" / "busy"
    with runs.hold(busy):
        proc = sparsebert("pretrain", *TINY, "run_id=busy", cwd=workdir, check=False)
    assert_clean_error(
        proc, "is already running", f"pid {os.getpid()}", f"host {platform.node()[:80]}"
    )
    assert not (busy / runs.MANIFEST).exists()  # the refused job marked nothing


def test_a_waiting_job_takes_the_folder_only_after_the_holder_releases_it(tmp_path, capsys):
    folder = tmp_path / "sweep" / "job"
    entered, released = threading.Event(), threading.Event()

    def second() -> None:
        with runs.hold(folder, wait=True):
            assert released.is_set()  # never inside while the first job is
            entered.set()

    with runs.hold(folder):
        waiter = threading.Thread(target=second)
        waiter.start()
        seen, deadline = "", time.monotonic() + 60
        while "waiting" not in seen:  # it saw the holder, and waits (bounded: never hang CI)
            captured = capsys.readouterr()
            seen += captured.out + captured.err
            assert waiter.is_alive() and time.monotonic() < deadline, seen
            time.sleep(0.01)
        assert not entered.is_set()
        released.set()
    waiter.join()
    assert entered.is_set()
    assert not runs.is_locked(folder)


def test_a_second_hold_in_the_same_process_is_refused_too(tmp_path):
    with runs.hold(tmp_path / "run"):
        assert runs.is_locked(tmp_path / "run")
        with pytest.raises(SparseBertError, match="already running"):
            with runs.hold(tmp_path / "run"):
                pass


@pytest.mark.parametrize(
    "override",
    [
        "+hydra.callbacks.x._target_=distutils.spawn.spawn",
        "hydra.callbacks.sweep_summary._target_=os.system",
        "+mask._target_=os.system",
        "--config-dir=/tmp",
    ],
)
def test_code_cannot_come_in_through_the_command_line(workdir, override):
    proc = sparsebert("pretrain", *TINY, override, cwd=workdir, check=False)
    assert_clean_error(proc, "error:")
    assert not (workdir / "runs").exists()


def test_temporary_names_are_per_process(tmp_path):
    seen = []
    runs.atomic_write(tmp_path / "a.json", lambda tmp: seen.append(tmp) or Path(tmp).write_text(""))
    assert f".a.{os.getpid()}-" in Path(seen[0]).name


@pytest.mark.slow
def test_two_sweeps_on_one_sweep_folder_never_share_a_job(workdir):
    from robust_helpers import Job, losses

    args = ("pretrain", "-m", *TINY, "trainer.max_steps=6", "trainer.log_every=1", "seed=0,1")
    jobs = [Job(*args, "sweep_name=shared", cwd=workdir) for _ in range(2)]
    codes = [job.finish() for job in jobs]
    assert codes == [0, 0], [job.output for job in jobs]
    folders = sorted(
        (workdir / "runs" / "pretrain" / "multirun" / "shared").glob("*/manifest.json")
    )
    assert len(folders) == 2
    for manifest in folders:
        assert runs.load_manifest(manifest.parent)["attempts"] == 1  # one job ran it, one skipped
        steps = [row[0] for row in losses(manifest.parent)]
        assert steps == sorted(set(steps)) == list(range(1, 7))  # no interleaved steps
