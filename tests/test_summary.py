"""The end-of-stage summary read from a run folder: metrics, outputs and the rerun command."""

import json
from pathlib import Path

from sparsebert_cli.summary import rerun_command, summary_lines


def make_run(run_dir: Path, stage: str, command: str, metrics: dict, inputs: dict | None = None):
    run_dir.mkdir(parents=True)
    manifest = {"stage": stage, "status": "completed", "command": command, "inputs": inputs or {}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_a_single_run_is_rerun_with_its_run_id(tmp_path):
    run_dir = tmp_path / "runs" / "search" / "20260101-120000-000001"
    assert rerun_command("sparsebert search mask=dam", run_dir) == (
        "sparsebert search mask=dam run_id=20260101-120000-000001"
    )


def test_the_resume_command_resumes_a_run_started_with_resume_never(tmp_path):
    """It kept resume=never, so following it removed the checkpoints it was to resume from."""
    run_dir = tmp_path / "runs" / "pretrain" / "killed"
    for sweep in ("", "multirun/s/"):
        folder = tmp_path / "runs" / "pretrain" / f"{sweep}killed"
        command = rerun_command(
            "sparsebert pretrain mask=window resume=never run_id=killed", folder
        )
        assert "resume=" not in command and "mask=window" in command
    assert rerun_command("sparsebert pretrain resume=never", run_dir).endswith("run_id=killed")


def test_a_given_run_id_is_kept_as_it_was_typed(tmp_path):
    run_dir = tmp_path / "runs" / "search" / "mine"
    assert rerun_command("sparsebert search run_id=mine 'mask.lam=1e-3'", run_dir) == (
        "sparsebert search run_id=mine mask.lam=1e-3"
    )


def test_a_run_id_of_another_folder_is_replaced_by_the_runs_own(tmp_path):
    """A pipeline step recorded the pipeline's run_id=: rerunning it started a new run there."""
    run_dir = tmp_path / "runs" / "pretrain" / "pipeline-0123456789abcdef"
    assert rerun_command("sparsebert pretrain mask=window run_id=pint", run_dir) == (
        "sparsebert pretrain mask=window run_id=pipeline-0123456789abcdef"
    )


def test_a_sweep_job_is_rerun_in_its_sweep(tmp_path):
    run_dir = tmp_path / "runs" / "pipeline" / "multirun" / "lam" / "mask.lam=0.001"
    assert rerun_command("sparsebert pipeline mask.lam=0.001", run_dir) == (
        "sparsebert pipeline -m mask.lam=0.001 sweep_name=lam"
    )


def test_a_single_runs_latest_is_rerun_as_the_folder_it_resolved_to(tmp_path):
    """`latest` (written, or evaluate's default) would name a newer upstream run by the time
    the command is rerun: another config, refused in this folder. A path stays as typed."""
    search, pretrain = str(tmp_path / "runs" / "search" / "s1"), "runs/pretrain/p1"
    command = (
        "sparsebert pretrain mask=from_run mask.from_run=latest model.from_run=runs/pretrain/p1"
    )
    run_dir = make_run(tmp_path / "runs" / "pretrain" / "r", "pretrain", command, {},
                       inputs={"mask": {"run_dir": search}, "model": {"run_dir": pretrain}})  # fmt: skip
    assert summary_lines(run_dir)[-1] == (
        "  rerun or resume: sparsebert pretrain mask=from_run model.from_run=runs/pretrain/p1 "
        f"mask.from_run={search} run_id=r"
    )
    finetune = str(tmp_path / "runs" / "finetune" / "f1")
    run_dir = make_run(tmp_path / "runs" / "evaluate" / "e", "evaluate", "sparsebert evaluate", {},
                       inputs={"model": {"run_dir": finetune}})  # fmt: skip
    assert summary_lines(run_dir)[-1] == (
        f"  rerun or resume: sparsebert evaluate model.from_run={finetune} run_id=e"
    )


def test_evaluate_summary_lists_metrics_and_submission_files(tmp_path):
    run_dir = make_run(
        tmp_path / "runs" / "evaluate" / "e1",
        "evaluate",
        "sparsebert evaluate",
        {"eval/accuracy": 0.8125, "eval/headline": 0.8125, "mask/sparsity": 12.5},
    )
    (run_dir / "predictions" / "submission").mkdir(parents=True)
    (run_dir / "predictions" / "submission" / "MRPC.tsv").write_text("index\tprediction\n")
    lines = summary_lines(run_dir)
    assert lines[0] == "evaluate completed"
    assert f"  run folder: {run_dir}" in lines
    assert "  metrics: eval/headline=0.8125  eval/accuracy=0.8125  mask sparsity=12.50 %" in lines
    assert f"  submission: {run_dir / 'predictions' / 'submission'}  (MRPC.tsv)" in lines
    assert lines[-1] == "  rerun or resume: sparsebert evaluate run_id=e1"


def test_pipeline_summary_names_its_step_folders(tmp_path):
    step = tmp_path / "runs" / "evaluate" / "pipeline-abc"
    run_dir = make_run(
        tmp_path / "runs" / "pipeline" / "p1",
        "pipeline",
        "sparsebert pipeline",
        {"eval/headline": 0.5},
        inputs={"evaluate": {"run_dir": str(step), "stage": "evaluate"}},
    )
    assert f"  evaluate step: {step}" in summary_lines(run_dir)


def test_a_folder_without_manifest_has_no_summary(tmp_path):
    assert summary_lines(tmp_path) == []


def test_a_pre_ln_model_says_plain_transformers_misreads_it(tmp_path):
    """Plain transformers loads a pre-LN model as post-LN without a word (outputs differ)."""
    run_dir = make_run(tmp_path / "runs" / "pretrain" / "r", "pretrain", "sparsebert pretrain", {})
    model = run_dir / "artifacts" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert f"  model: {model}" in summary_lines(run_dir)
    (model / "config.json").write_text(json.dumps({"norm_position": "pre"}))
    line = next(line for line in summary_lines(run_dir) if line.startswith("  model:"))
    assert "(pre-LN: load it with sparsebert_cli.modeling.load_checkpoint" in line
