"""`sparsebert ls`: the full run folder in the listing, and `--show RUN|latest`."""

import json
import time
from pathlib import Path

import pytest

from sparsebert_cli.cli import main


def ls_main(argv: list[str]) -> int:
    """`sparsebert ls ARGV` as the command runs it (cli.main prints a refusal)."""
    return main(["ls", *argv])


def make_run(runs_dir: Path, stage: str, name: str, started: float, inputs: dict | None = None):
    run_dir = runs_dir / stage / name
    run_dir.mkdir(parents=True)
    manifest = {
        "stage": stage,
        "status": "completed",
        "command": f"sparsebert {stage} task=polarity",
        "started_at": started,
        "seed": 0,
        "inputs": inputs or {},
    }
    # the config first, as a run writes it (JSON is YAML)
    config = {"stage": stage, "seed": 0, "task": {"name": "polarity"}}
    (run_dir / "config.yaml").write_text(json.dumps(config))
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "metrics.json").write_text(json.dumps({"eval/headline": 0.75}))
    return run_dir


def test_listing_keeps_the_whole_run_folder_when_piped(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    runs_dir = tmp_path / "a-long-folder-name-that-pushes-the-run-column-past-eighty" / "runs"
    run_dir = make_run(runs_dir, "evaluate", "20260101-120000-000001", time.time())
    assert ls_main(["--runs-dir", str(runs_dir)]) == 0
    assert str(run_dir) in capsys.readouterr().out


def test_a_runs_folder_that_does_not_exist_is_said_so(tmp_path, capsys):
    assert ls_main(["--runs-dir", str(tmp_path / "nowhere")]) == 0
    assert f"note: {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_a_command_with_a_bracketed_path_is_listed_as_written(tmp_path, capsys, monkeypatch):
    """`data.files=[/abs/path]` in one run's command was read as rich markup: `ls` failed for
    the whole runs folder (a closing tag), and `[mydata/*.txt]` vanished from the listing."""
    monkeypatch.setenv("COLUMNS", "200")
    for name, files in (("a", "[/tmp/mydata/b.txt]"), ("b", "[mydata/*.txt]")):
        run_dir = make_run(tmp_path, "pretrain", name, time.time())
        manifest = json.loads((run_dir / "manifest.json").read_text())
        manifest["command"] = f"sparsebert pretrain data=text_files data.files={files}"
        (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert ls_main(["--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "data.files=[/tmp/mydata/b.txt]" in out and "data.files=[mydata/*.txt]" in out


def test_show_latest_prints_metrics_inputs_and_the_command_with_run_id(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "finetune", "older", 1.0)
    finetune = make_run(runs_dir, "finetune", "f1", 2.0)
    make_run(runs_dir, "evaluate", "e1", 3.0, {"model": {"run_dir": str(finetune)}})
    assert ls_main(["--runs-dir", str(runs_dir), "--show", "latest"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"run folder: {(runs_dir / 'evaluate' / 'e1').resolve()}" in lines
    assert f"input model: {finetune}" in lines
    assert "metrics: eval/headline=0.75" in lines
    # evaluate's default model.from=latest, pinned to what it resolved to
    rerun = (
        f"rerun or resume: sparsebert evaluate task=polarity model.from_run={finetune} run_id=e1"
    )
    assert rerun in lines


def test_show_as_json_holds_the_metrics_and_the_rerun_command_too(tmp_path, capsys):
    """`--show RUN --json` printed the manifest alone, without what `--show` promises."""
    run_dir = make_run(tmp_path / "runs", "finetune", "f1", 2.0)
    assert ls_main(["--runs-dir", str(tmp_path / "runs"), "--show", str(run_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["stage"], shown["status"], shown["run_dir"]) == (
        "finetune", "completed", str(run_dir.resolve())
    )  # fmt: skip
    assert shown["metrics"] == {"eval/headline": 0.75}
    assert shown["rerun"] == "sparsebert finetune task=polarity run_id=f1"


def test_show_latest_of_a_stage_picks_that_stage(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "finetune", "f1", 2.0)
    make_run(runs_dir, "evaluate", "e1", 3.0)
    assert ls_main(["finetune", "--runs-dir", str(runs_dir), "--show", "latest"]) == 0
    assert "stage: finetune" in capsys.readouterr().out.splitlines()


def test_show_latest_without_runs_is_a_clear_error(tmp_path, capsys):
    assert ls_main(["--runs-dir", str(tmp_path / "runs"), "--show", "latest"]) == 1
    assert capsys.readouterr().err.startswith("error: no run under")


def test_show_of_a_run_id_finds_its_folder(tmp_path, capsys, monkeypatch):
    """The id the summaries print as run_id= was refused as "not a run folder"."""
    monkeypatch.chdir(tmp_path)
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "finetune", "f1", 2.0)
    assert ls_main(["--runs-dir", str(runs_dir), "--show", "f1"]) == 0
    assert f"run folder: {(runs_dir / 'finetune' / 'f1').resolve()}" in capsys.readouterr().out
    make_run(runs_dir, "evaluate", "f1", 3.0)
    assert ls_main(["--runs-dir", str(runs_dir), "--show", "f1"]) == 1
    assert "f1 names 2 runs under" in capsys.readouterr().err
    assert ls_main(["evaluate", "--runs-dir", str(runs_dir), "--show", "f1"]) == 0
    assert ls_main(["--runs-dir", str(runs_dir), "--show", "nope"]) == 1
    assert "nor the run id of a run under" in capsys.readouterr().err


def test_show_of_a_name_too_long_for_the_system_is_no_run_folder(tmp_path, capsys):
    """os.stat raises ENAMETOOLONG for a 300-character name: the usual error, no traceback."""
    assert ls_main(["--show", str(tmp_path / ("x" * 300))]) == 1
    assert "is not a run folder" in capsys.readouterr().err


def test_a_running_run_that_nobody_holds_reads_interrupted(tmp_path, capsys):
    """A joblib sweep stopped with Ctrl-C (or a SIGKILL) left `running` runs that ls and report
    showed as running for ever; a rerun resumes them."""
    from sparsebert_cli import runs
    from sparsebert_cli.reporting.records import collect_runs

    run_dir = make_run(tmp_path / "runs", "finetune", "r", time.time())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    with runs.hold(run_dir):
        assert ls_main(["--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["status"] == "running"
    assert ls_main(["--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "interrupted"
    assert ls_main(["--runs-dir", str(tmp_path / "runs"), "--show", str(run_dir)]) == 0
    assert "status: interrupted" in capsys.readouterr().out
    assert [r.status for r in collect_runs([tmp_path / "runs"])[0]] == ["interrupted"]


def test_an_empty_run_or_folder_is_refused_not_taken_for_all_runs(tmp_path, capsys):
    """`--show ''` listed every run; `report --out ''` wrote to "." and said it is a folder."""
    for argv in (["ls", "--show", ""], ["ls", "--runs-dir", " "], ["report", "x", "--out", ""]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert "an empty name; give a file or folder" in capsys.readouterr().err
