"""Rendering the table (Markdown, CSV, LaTeX, JSON, terminal), the CLI and the sweep callback."""

import csv
import io
import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from test_report_table import make_job, mrpc

from sparsebert_cli.callbacks import SweepSummary
from sparsebert_cli.reporting.cli import main, write_summaries
from sparsebert_cli.reporting.formats import cell_text, to_csv, to_json, to_latex, to_markdown
from sparsebert_cli.reporting.table import Cell, Stat, build_table


@pytest.fixture
def sweep(tmp_path):
    """dense: MRPC over two seeds and a failed RTE job; no_diag: MRPC only."""
    folder = tmp_path / "runs" / "pipeline" / "multirun" / "s1"
    make_job(folder / "a", seed=0, metrics=mrpc(0.80, 0.90, sparsity=0.0))
    make_job(folder / "b", seed=1, metrics=mrpc(0.82, 0.92, sparsity=0.0))
    make_job(folder / "c", task="rte", status="failed", error="out of memory")
    make_job(folder / "d", mask="no_diag", metrics=mrpc(0.70, 0.80, sparsity=78.125))
    return folder


def _cell(status, completed, failed=0, running=0, stats=()):
    values = {f"m{i}": Stat(mean, std, completed) for i, (mean, std) in enumerate(stats)}
    return Cell(status, values, list(range(completed)), completed, failed, running, [], [])


def test_cell_text_shows_means_stds_and_seed_count():
    cell = _cell("ok", 3, stats=[(81.94, 0.31), (81.9, 0.2)])
    assert cell_text(cell) == "81.9/81.9 ± 0.3/0.2 (n=3)"


def test_cell_text_of_one_seed_has_no_std():
    assert cell_text(_cell("ok", 1, stats=[(58.44, None)])) == "58.4 (n=1)"


def test_cell_text_counts_failed_jobs_beside_completed_ones():
    assert cell_text(_cell("partial", 1, failed=2, stats=[(50.0, None)])) == "50.0 (n=1), 2 failed"


def test_cell_text_marks_failed_and_missing_cells():
    assert cell_text(_cell("failed", 0, failed=1)) == "failed"
    assert cell_text(_cell("failed", 0, failed=3)) == "failed (3)"
    assert cell_text(_cell("missing", 0)) == "missing"


def test_markdown_is_the_paper_shaped_table_with_failures_listed(sweep):
    text = to_markdown(build_table([sweep]))
    lines = text.splitlines()
    assert lines[:4] == [
        "| mask | sparsity % | MRPC acc/F1 | RTE | Avg |",
        "|---|---|---|---|---|",
        "| dense | 0.0 | 81.0/91.0 ± 1.4/1.4 (n=2) | failed | n/a |",
        "| no_diag | 78.1 | 70.0/80.0 (n=1) | missing | n/a |",
    ]
    assert f"- {(sweep / 'c').resolve()}: out of memory" in lines
    assert "MLM loss" not in text  # no pre-training upstream: neither the column nor its legend


def test_mlm_columns_appear_when_results_descend_from_pretrainings(tmp_path, capsys):
    from test_report_table import make_pretrain

    runs_dir = tmp_path / "runs"
    for seed, loss in enumerate([6.0, 6.5]):
        gate = {"mlm_accuracy": 0.2 + 0.1 * seed, "uses_attention": float(seed)}
        inputs = {"pretrain": make_pretrain(runs_dir, f"p{seed}", loss, **gate)}
        make_job(
            runs_dir / "pipeline" / f"j{seed}", seed=seed, inputs=inputs, metrics=mrpc(0.8, 0.9)
        )
    table = build_table([runs_dir / "pipeline"])
    lines = to_markdown(table).splitlines()
    assert lines[0] == ("| mask | sparsity % | MLM loss | MLM acc. % | gate | MRPC acc/F1 | Avg |")
    assert lines[2] == (
        "| dense | 0.0 | 6.250 ± 0.354 (n=2) | 25.0 ± 7.1 (n=2) | 1/2 pass "
        "| 80.0/90.0 ± 0.0/0.0 (n=2) | 85.0 |"
    )
    assert "MLM loss / acc.: held-out masked-LM loss" in lines[-1] and "gate:" in lines[-1]
    row = next(csv.DictReader(io.StringIO(to_csv(table))))
    assert (row["mlm_loss mean"], row["mlm_loss std"]) == ("6.2500", "0.3536")
    assert (row["mlm_accuracy mean"], row["gate passed"], row["gate measured"]) == (
        "25.0000",
        "1",
        "2",
    )
    accuracy = json.loads(to_json(table))["rows"][0]["mlm_accuracy"]  # was the fraction 0.25
    assert (accuracy["mean"], round(accuracy["std"], 4), accuracy["n"]) == (25.0, 7.0711, 2)
    assert main([str(runs_dir / "pipeline")]) == 0
    assert "6.250 ± 0.354 (n=2)" in capsys.readouterr().out


def test_csv_has_mean_std_n_and_status_per_column(sweep):
    rows = list(csv.DictReader(io.StringIO(to_csv(build_table([sweep])))))
    assert rows[0]["row"] == "dense"
    assert rows[0]["mask.name"] == "dense"
    assert rows[0]["MRPC acc mean"] == "81.0000"
    assert rows[0]["MRPC F1 std"] == "1.4142"
    assert (rows[0]["MRPC n"], rows[0]["RTE status"]) == ("2", "failed")
    assert rows[1]["RTE acc mean"] == "" and rows[1]["average"] == ""


def test_latex_of_the_tables_symbols_is_ascii():
    """The pre-training table's header `MLM loss − dense` kept a U+2212 that pdflatex refuses."""
    from sparsebert_cli.reporting.formats import DELTA_HEADER, latex_escape

    assert latex_escape(DELTA_HEADER) == "MLM loss $-$ dense (same seed)"
    assert latex_escape("± × ≥ ≤ λ τ α σ θ").isascii()


def test_latex_escapes_and_closes_the_tabular(sweep):
    text = to_latex(build_table([sweep]))
    assert text.startswith("\\begin{tabular}{lrrrr}\n\\hline\n")
    assert "no\\_diag & 78.1 & 70.0/80.0 (n=1) & missing & n/a \\\\" in text
    assert "81.0/91.0 $\\pm$ 1.4/1.4" in text
    assert text.endswith("\\hline\n\\end{tabular}\n")


def test_json_holds_the_numbers_of_every_cell(sweep):
    data = json.loads(to_json(build_table([sweep])))
    dense = data["rows"][0]
    assert dense["label"] == "dense"
    assert dense["cells"][0]["values"]["acc"] == {
        "mean": 81.0,
        "std": pytest.approx(1.41421356),
        "n": 2,
    }
    assert dense["cells"][1]["status"] == "failed"
    assert [c["label"] for c in data["columns"]] == ["MRPC", "RTE"]


def test_cli_prints_the_chosen_format(sweep, capsys):
    assert main([str(sweep), "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("| mask | sparsity % | MRPC acc/F1 | RTE | Avg |")


def test_cli_terminal_table_lists_rows_and_failed_jobs(sweep, capsys):
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "81.0/91.0 ± 1.4/1.4 (n=2)" in out and "no_diag" in out
    assert f"failed: {(sweep / 'c').resolve()}: out of memory" in out


def test_cli_writes_the_table_to_out(sweep, tmp_path):
    out = tmp_path / "t.csv"
    assert main([str(sweep), "--format", "csv", "--out", str(out)]) == 0
    assert out.read_text() == to_csv(build_table([sweep]))


def test_out_files_suffix_sets_the_format_and_a_contrary_format_is_refused(sweep, tmp_path, capsys):
    """`--out results.md` (or .csv, .tex, .json) wrote the terminal's box table into the file."""
    table = build_table([sweep])
    for name, render in (("t.md", to_markdown), ("t.csv", to_csv), ("t.tex", to_latex)):
        assert main([str(sweep), "--out", str(tmp_path / name)]) == 0
        assert (tmp_path / name).read_text() == render(table)
    with pytest.raises(SystemExit) as refused:
        main([str(sweep), "--format", "csv", "--out", str(tmp_path / "u.md")])
    assert refused.value.code == 2 and not (tmp_path / "u.md").exists()
    assert "names a .md file, but --format csv" in capsys.readouterr().err


def test_cli_user_error_is_one_line_and_exit_1(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_rows_and_cols_take_config_keys_only(sweep, capsys):
    """A misspelt key read None in every run and pooled them all into one row."""
    with pytest.raises(SystemExit) as exit_:
        main([str(sweep), "--rows", "mask.lamda"])
    assert exit_.value.code == 2
    assert "--rows mask.lamda: not a config key" in capsys.readouterr().err
    assert main([str(sweep), "--rows", "mask.lam,seed", "--cols", "task.name"]) == 0
    assert main([str(sweep), "--rows", "experiment,mask.from"]) == 0  # a group; an alias
    from sparsebert_cli.reporting.cli import parse_args

    assert parse_args([str(sweep), "--rows", "experiment,mask.from"]).rows == [
        "experiment",
        "mask.from_run",
    ]
    with pytest.raises(SystemExit):
        parse_args([str(sweep), "--rows", "hydra"])  # Hydra's settings: not in the runs' config


def test_help_and_table_do_not_import_torch(sweep):
    code = (
        "import sys, contextlib, io\n"
        "from sparsebert_cli.reporting.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        f"main([{str(sweep)!r}, '--format', 'json'])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_write_summaries_writes_md_csv_json_into_the_sweep(sweep):
    written = write_summaries(sweep)
    assert [p.name for p in written] == ["summary.md", "summary.csv", "summary.json"]
    assert (sweep / "summary.md").read_text() == to_markdown(build_table([sweep]))


def _sweep_config(stage, sweep_dir):
    return OmegaConf.create({"stage": stage, "hydra": {"sweep": {"dir": str(sweep_dir)}}})


def test_callback_writes_the_summaries_when_the_multirun_ends(sweep):
    SweepSummary().on_multirun_end(_sweep_config("pipeline", sweep))
    assert (sweep / "summary.json").is_file()


def test_callback_never_raises_when_the_report_fails(tmp_path, capsys):
    SweepSummary().on_multirun_end(_sweep_config("pipeline", tmp_path / "empty"))
    assert "no sweep summary" in capsys.readouterr().err


def test_callback_skips_sweeps_of_stages_without_task_results(tmp_path, capsys):
    SweepSummary().on_multirun_end(_sweep_config("search", tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == ""


@pytest.fixture
def mixed(tmp_path):
    """One MRPC cell holding a demo-sized and a smoke-sized run, both seed 0."""
    multirun = tmp_path / "runs" / "pipeline" / "multirun"
    make_job(multirun / "demo" / "a", extra={"model": {"hidden_size": 128}}, metrics=mrpc(0.8, 0.9))
    make_job(multirun / "smoke" / "a", extra={"model": {"hidden_size": 64}}, metrics=mrpc(0.5, 0.6))
    return multirun


@pytest.mark.parametrize("fmt", ["table", "md", "latex", "json"])
def test_every_format_carries_the_mixed_cell_warning(mixed, tmp_path, fmt):
    out = tmp_path / f"report.{fmt}"
    assert main([str(mixed), "--format", fmt, "--out", str(out)]) == 0
    text = out.read_text()
    assert "mixed configs" in text and "model.hidden_size: 128 | 64" in text
    assert "65.0" not in text  # the mean of 80 and 50 is never shown


def test_csv_marks_the_mixed_cell_and_leaves_its_numbers_empty(mixed):
    rows = list(csv.DictReader(io.StringIO(to_csv(build_table([mixed])))))
    assert rows[0]["MRPC status"] == "mixed"
    assert rows[0]["MRPC acc mean"] == ""


def test_cli_warns_on_stderr_about_a_mixed_cell_in_any_format(mixed, capsys):
    assert main([str(mixed), "--format", "csv"]) == 0
    assert "warning: dense × MRPC: mixed configs" in capsys.readouterr().err
