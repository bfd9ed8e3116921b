"""The dispatcher: stages go to Hydra untouched, tools to argparse, typos get a suggestion."""

import subprocess
import sys

import pytest
from conftest import sparsebert

from sparsebert_cli.cli import main
from sparsebert_cli.config import rewrite_aliases, sb_slug


def test_overview_lists_every_stage_and_tool(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in (
        "search",
        "pretrain",
        "finetune",
        "evaluate",
        "pipeline",
        "report",
        "masks",
        "ls",
        "validate",
    ):
        assert name in out


def test_a_tool_whose_reader_closed_the_pipe_stops_quietly(monkeypatch):
    """`sparsebert masks --json | head`: no traceback, the status of a tool stopped by SIGPIPE."""
    import os
    import signal

    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w", buffering=1)  # line-buffered: the first line meets EPIPE
    monkeypatch.setattr(sys, "stdout", stream)
    try:
        assert main(["masks", "--json"]) == 128 + signal.SIGPIPE
    finally:
        stream.close()  # what was left buffered goes to /dev/null now


def test_no_arguments_prints_the_overview(capsys):
    assert main([]) == 0
    assert "sparsebert search mask=dam" in capsys.readouterr().out


def test_typo_suggests_the_nearest_stage(capsys):
    assert main(["finetun"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'finetune'?" in err
    assert "Traceback" not in err


def test_help_does_not_import_torch():
    code = "import sys; from sparsebert_cli.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().endswith("False")


def test_from_aliases_are_rewritten_to_schema_fields():
    assert rewrite_aliases(["mask.from=latest", "model.from=/r/x", "seed=1"]) == [
        "mask.from_run=latest",
        "model.from_run=/r/x",
        "seed=1",
    ]


def test_sweep_folder_names_are_safe_and_deterministic():
    assert sb_slug("mask=dam,mask.lam=0.001") == "mask=dam,mask.lam=0.001"
    slug = sb_slug("task.glue_dir=/tmp/glue,mask=dense")
    assert "/" not in slug and slug == sb_slug("task.glue_dir=/tmp/glue,mask=dense")
    assert sb_slug("") == "default"


def test_a_path_in_a_sweep_keeps_the_swept_values_in_the_folder_name():
    """`model.from=/long/path` filled the 71 characters kept and cut `seed` and `task` off:
    every job folder of the sweep read the same."""
    names = {
        sb_slug(f"model.from_run=/tmp/walk/runs/pretrain/pipeline-88a2908229b52b49,seed={s},"
                f"task={t}")
        for s in (0, 1) for t in ("polarity", "lee_sts")
    }  # fmt: skip
    assert len(names) == 4 and all("pipeline-88a2908229b52b49,seed=" in n for n in names)
    assert any(n.startswith("model.from_run=pipeline-88a2908229b52b49,seed=1,task=lee_sts-")
               for n in names)  # fmt: skip
    other = sb_slug("model.from_run=/elsewhere/pipeline-88a2908229b52b49,seed=1,task=lee_sts")
    assert other not in names  # the same last part of another path: another folder


def test_validate_accepts_a_good_config(workdir):
    proc = sparsebert("validate", "finetune", "task=mrpc", cwd=workdir)
    assert "config OK" in proc.stdout


def test_validate_names_the_group_and_its_options(workdir):
    proc = sparsebert("validate", "finetune", "task=nope", cwd=workdir, check=False)
    assert proc.returncode != 0
    assert "there is no task option 'nope'" in proc.stderr and "polarity" in proc.stderr
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr


def test_validate_refuses_a_flag_and_names_the_sweep_check(workdir, capsys):
    """`validate pipeline -m ...` printed `error: LexerNoViableAltException: -m`."""
    from sparsebert_cli.tools import validate_main

    assert validate_main(["pipeline", "-m", "mask=dense"]) == 1
    err = capsys.readouterr().err
    assert "takes overrides only, not -m" in err and "sparsebert pipeline -m" in err


@pytest.mark.parametrize(
    "argv, said", [([], ""), (["foo"], "unknown stage 'foo'\n"), (["task=mrpc"], "'task=mrpc'")]
)
def test_validate_without_a_stage_prints_its_usage_and_exits_2(argv, said, capsys):
    """`validate` alone, or with no stage close to its first word, raised an IndexError."""
    from sparsebert_cli.tools import validate_main

    assert validate_main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "usage: sparsebert validate STAGE" in err and "did you mean" not in err


@pytest.mark.parametrize(
    "override, option",
    [("mask.name=window", "mask=window"), ("task.name=mrpc", "task=mrpc")],
)
def test_a_groups_name_set_to_an_option_is_refused_naming_the_option(override, option, capsys):
    """`mask.name=window` trained with dense's window 0: a diagonal-only mask."""
    from sparsebert_cli.tools import validate_main

    stage = "pretrain" if override.startswith("mask") else "finetune"
    assert validate_main([stage, override]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {override} renames") and f"option itself: {option}." in err


@pytest.mark.parametrize(
    "argv, said",
    [
        (
            ["pretrain", "mask", "window"],
            "'mask' has no value (did you mean mask=window?): a group",
        ),
        (["pretrain", "mask", "=", "window"], "'mask' has no value: a group is chosen as mask="),
        (["finetune", "mrpc"], "'mrpc' is not an override: write key=value"),
        (["pretrain", "--cfg", "job", "trainer.max_steps"], "'trainer.max_steps' is not an"),
        (["search", "~mask.tau_final", "mask"], "'mask' has no value"),  # a deletion is one
        (["pretrain", "=5"], "'=5' has no key before '='"),  # said " is not a setting"
        (["pretrain", "+hydra.sweeper.params={seed: '0,1'}"], "+hydra.sweeper.params={seed:"),
        (["evaluate", "sweep_name=myeval"], "sweep_name=myeval: sweep_name names the folder of"),
    ],
)
def test_a_word_that_is_not_an_override_is_refused_in_one_line(argv, said, capsys):
    """Hydra answered "Error parsing override 'mask' missing EQUAL at '<EOF>'"; a Hydra flag's
    value (`--cfg job`) is not an override."""
    from sparsebert_cli.cli import main

    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("args", [[], ["mask=window"], ["--cfg", "job"], ["~mask.tau_final"]])
def test_overrides_flags_and_no_words_at_all_pass_the_word_check(args):
    from sparsebert_cli.validation import check_safe_overrides

    check_safe_overrides(args)  # no override at all ended in a zip() ValueError


@pytest.mark.parametrize("argv", [["--help"], ["pretrain", "-h"]])
def test_validate_help_says_what_it_checks_and_exits_0(argv, capsys):
    """The top-level help says tools take --help; validate printed its usage and exited 2."""
    from sparsebert_cli.tools import validate_main

    assert validate_main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sparsebert validate STAGE") and "--dry-run" in out


def test_an_unquoted_value_with_an_equals_sign_is_refused_with_the_quoting(workdir):
    """A sweep job's folder (its name holds = and ,) as model.from: Hydra's grammar error."""
    folder = "runs/finetune/multirun/s/debug=smoke,seed=1"
    proc = sparsebert("evaluate", f"model.from={folder}", cwd=workdir, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is not an override Hydra can read (mismatched input '='" in proc.stderr
    assert f"\"model.from_run='{folder}'\"" in proc.stderr
    proc = sparsebert("evaluate", "-m", f"model.from={folder}", "--dry-run", cwd=workdir,
                      check=False)  # fmt: skip
    assert proc.returncode == 1 and "is not an override Hydra can read" in proc.stderr
    # A sweep over two such folders: quoting the whole value made them one path.
    assert "With -m, each value of a sweep is quoted on its own: " in proc.stderr
    assert "\"model.from_run='<one>','<other>'\"" in proc.stderr


def test_an_unquoted_list_of_overrides_is_refused_with_each_element_quoted():
    """A pipeline's per-step list: quoting the whole list would make it a string."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.validation import check_override_values

    with pytest.raises(SparseBertError) as info:
        check_override_values(["pipeline.finetune=[trainer.lr=1e-4,trainer.epochs=5]"])
    fix = "pipeline.finetune=['trainer.lr=1e-4','trainer.epochs=5']"
    assert f'"{fix}"' in str(info.value)
    parsed = OverridesParser.create().parse_override(fix)
    assert parsed.value() == ["trainer.lr=1e-4", "trainer.epochs=5"]


def test_several_values_without_multirun_are_refused_with_the_fix(workdir):
    """Hydra's own answer was a 5-line block (a stage) or advice validate refuses (validate)."""
    for args in (["pipeline", "mask=dense,dam"], ["validate", "pipeline", "mask=dense,dam"]):
        proc = sparsebert(*args, "debug=smoke", cwd=workdir, check=False)
        assert proc.returncode == 1 and proc.stderr.count("error:") == 1, proc.stderr
        assert "mask=dense,dam lists several values, a sweep: run it with -m" in proc.stderr
    assert not (workdir / "runs").exists()


def test_a_sweep_that_expands_to_no_job_is_refused_naming_the_sweep(workdir):
    """Hydra launched 0 jobs and the command exited 0, a typo taken for success."""
    for args in (["mask=glob(nope*)"], ["trainer.max_steps=range(5,2)", "--dry-run"]):
        proc = sparsebert("pretrain", "-m", "debug=smoke", *args, cwd=workdir, check=False)
        assert proc.returncode == 1 and proc.stderr.count("error:") == 1, proc.stderr
        assert f"the sweep has no job: {args[0]} expands to no value" in proc.stderr
    assert not (workdir / "runs").exists()


def test_a_runs_dir_that_is_a_file_is_refused_by_ls(workdir, capsys):
    (workdir / "afile").write_text("")
    assert main(["ls", "--runs-dir", "afile"]) == 1
    assert "--runs-dir afile is a file, not a runs folder" in capsys.readouterr().err


def test_help_lists_only_the_groups_a_stage_takes(workdir):
    """Hydra's own list named every group in conf/, also those the stage refuses."""
    groups = {}
    for stage in ("evaluate", "finetune", "search"):
        out = sparsebert(stage, "--help", cwd=workdir).stdout
        listed = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
        groups[stage] = {line.split(":")[0] for line in listed.splitlines() if ": " in line}
    assert groups["evaluate"] == {"paths"}
    assert "task" in groups["finetune"] and "data" not in groups["finetune"]
    assert "data" in groups["search"] and "task" not in groups["search"]


def test_hydra_flags_pass_through(workdir):
    proc = sparsebert("pretrain", "--cfg", "job", "mask=no_diag", cwd=workdir)
    assert "stage: pretrain" in proc.stdout and "name: no_diag" in proc.stdout
    assert not (workdir / "runs").exists()


def test_printing_the_config_of_a_sweep_is_refused_with_the_two_ways_out(workdir):
    """Hydra's ValueError traceback ("Only one of --run, --multirun, --cfg ...")."""
    proc = sparsebert("pretrain", "-m", "mask=dense,no_diag", "--cfg", "job", cwd=workdir,
                      check=False)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "drop -m" in proc.stderr and "--dry-run" in proc.stderr


def test_stage_help_is_hydras(workdir):
    proc = sparsebert("search", "--help", cwd=workdir)
    assert "mask: " in proc.stdout or "== Config groups ==" in proc.stdout or "mask" in proc.stdout


def test_bad_value_exits_nonzero_without_traceback(workdir):
    proc = sparsebert("search", "mask.lam=-1", cwd=workdir, check=False)
    assert proc.returncode == 1
    assert "mask.lam=-1" in proc.stderr and "Traceback" not in proc.stderr


def test_a_stopped_sweep_says_its_jobs_resume_not_that_nothing_started(monkeypatch, capsys):
    """Ctrl-C in a joblib sweep reached the dispatcher as KeyboardInterrupt and printed "stopped
    before its run started" while both jobs had checkpoints."""
    from sparsebert_cli import cli

    def stopped(stage, args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_stage", stopped)
    assert cli.main(["pretrain", "-m", "seed=0,1"]) == 130
    err = capsys.readouterr().err
    assert "the sweep stopped" in err and "same command again resumes them" in err
    assert cli.main(["pretrain", "seed=0"]) == 130
    assert "stopped before its run started" in capsys.readouterr().err
