"""`build_table`: grouping, mean ± std over seeds, Average, failed and missing cells, sparsity."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.reporting.formats import to_csv, to_markdown, to_text
from sparsebert_cli.reporting.records import canonical
from sparsebert_cli.reporting.table import build_table


def make_job(
    folder: Path,
    *,
    mask: str = "dense",
    task: str = "mrpc",
    seed: int = 0,
    status: str = "completed",
    metrics: dict | None = None,
    lam: float | None = None,
    stage: str = "pipeline",
    error: str | None = None,
    inputs: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """A job folder as the stages write it: .hydra/, config.yaml, manifest.json, metrics.json."""
    overrides = [f"mask={mask}", f"task={task}", f"seed={seed}"]
    mask_cfg = {"name": mask, "structure": "unstructured", "lam": 0.0001}
    if mask in ("dam", "dam_s"):
        mask_cfg.update(name="dam", structure="structured" if mask == "dam_s" else "unstructured")
    if lam is not None:
        overrides.append(f"mask.lam={lam}")
        mask_cfg["lam"] = lam
    config = {"stage": stage, "seed": seed, "mask": mask_cfg, "task": {"name": task}}
    for group, values in (extra or {}).items():
        config[group] = {**config.get(group, {}), **values} if isinstance(values, dict) else values
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    manifest = {"stage": stage, "status": status, "seed": seed, "inputs": inputs or {}}
    if error is not None:
        manifest["error"] = error
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if status == "completed":
        (folder / "metrics.json").write_text(json.dumps(metrics or {}))
    return folder


def mrpc(acc: float, f1: float, sparsity: float = 0.0) -> dict:
    return {"eval/accuracy": acc, "eval/f1": f1, "mask/sparsity": sparsity}


@pytest.fixture
def sweep(tmp_path) -> Path:
    return tmp_path / "runs" / "pipeline" / "multirun" / "s1"


def test_rows_are_masks_and_columns_are_tasks_in_paper_order(sweep):
    make_job(sweep / "a", mask="no_diag", task="rte", metrics={"eval/accuracy": 0.6})
    make_job(sweep / "b", mask="dense", task="rte", metrics={"eval/accuracy": 0.7})
    make_job(sweep / "c", mask="dense", task="mrpc", metrics=mrpc(0.8, 0.9))
    table = build_table([sweep])
    assert [c.label for c in table.columns] == ["MRPC", "RTE"]
    assert [r.label for r in table.rows] == ["dense", "no_diag"]


def test_cell_is_mean_and_sample_std_over_seeds_with_seed_count(sweep):
    for seed, acc in enumerate([0.80, 0.82, 0.84]):
        make_job(sweep / f"s{seed}", seed=seed, metrics=mrpc(acc, acc + 0.05))
    cell = build_table([sweep]).rows[0].cells[0]
    assert cell.status == "ok"
    assert (cell.completed, cell.seeds) == (3, [0, 1, 2])
    assert cell.values["acc"].mean == pytest.approx(82.0)
    assert cell.values["acc"].std == pytest.approx(2.0)
    assert cell.values["F1"].mean == pytest.approx(87.0)


def test_single_seed_has_no_std(sweep):
    make_job(sweep / "a", metrics=mrpc(0.8, 0.9))
    assert build_table([sweep]).rows[0].cells[0].values["acc"].std is None


def test_dam_rows_are_split_by_structure_and_lambda(sweep):
    make_job(sweep / "a", mask="dam", lam=0.001, metrics=mrpc(0.8, 0.9))
    make_job(sweep / "b", mask="dam", lam=0.01, metrics=mrpc(0.8, 0.9))
    make_job(sweep / "c", mask="dam_s", lam=0.001, metrics=mrpc(0.8, 0.9))
    labels = [r.label for r in build_table([sweep]).rows]
    assert labels == ["DAM_u λ=0.001", "DAM_u λ=0.01", "DAM_s λ=0.001"]


def test_default_rows_follow_the_papers_order(sweep):
    for mask in ("dam_s", "star", "dam", "strided", "no_diag", "dense", "bigbird", "longformer"):
        make_job(sweep / mask, mask=mask, metrics=mrpc(0.8, 0.9))
    labels = [r.label for r in build_table([sweep]).rows]
    assert labels == [
        "dense", "no_diag", "strided", "longformer", "bigbird", "star",
        "DAM_u λ=0.0001", "DAM_s λ=0.0001",
    ]  # fmt: skip


def test_average_counts_mnli_twice_and_pair_tasks_once(sweep):
    make_job(
        sweep / "a",
        task="mnli",
        metrics={"eval/accuracy": 0.80, "eval/mismatched/accuracy": 0.82},
    )
    make_job(sweep / "b", task="mrpc", metrics=mrpc(0.84, 0.88))
    make_job(sweep / "c", task="cola", metrics={"eval/mcc": 0.5})
    row = build_table([sweep]).rows[0]
    assert row.average == pytest.approx((80 + 82 + 86 + 50) / 4)


def test_row_missing_a_column_has_no_average_and_a_missing_cell(sweep):
    make_job(sweep / "a", mask="dense", task="rte", metrics={"eval/accuracy": 0.7})
    make_job(sweep / "b", mask="no_diag", task="mrpc", metrics=mrpc(0.8, 0.9))
    make_job(sweep / "c", mask="dense", task="mrpc", metrics=mrpc(0.8, 0.9))
    no_diag = build_table([sweep]).rows[1]
    assert no_diag.label == "no_diag"
    assert [c.status for c in no_diag.cells] == ["ok", "missing"]
    assert no_diag.average is None


def test_a_row_whose_columns_ran_different_seeds_has_no_average(sweep):
    """MRPC over seeds 0-2 and RTE over seed 0 only: an Average of their means mixes seed sets."""
    for seed in range(3):
        make_job(sweep / f"m{seed}", seed=seed, metrics=mrpc(0.8, 0.9))
    make_job(sweep / "r0", task="rte", metrics={"eval/accuracy": 0.6})
    table = build_table([sweep])
    assert table.rows[0].average is None
    assert table.warnings == [
        "dense: no Average: its columns were run with different seeds ({0} vs {0, 1, 2}), and an "
        "Average over them would mix seed sets; run every task with the same seeds."
    ]


def test_a_row_whose_columns_came_from_other_checkpoints_has_no_average(tmp_path):
    """MRPC fine-tuned (seed 0) from checkpoints of seeds 0 and 1, RTE from seed 0's only: the
    own seeds agree, the replicates do not."""
    sweep = tmp_path / "runs" / "finetune" / "multirun" / "s"
    for base_seed in (0, 1):
        base = make_job(tmp_path / "runs" / "pretrain" / f"b{base_seed}", seed=base_seed,
                        stage="pretrain", metrics={"eval/mlm_loss": 7.0})  # fmt: skip
        tasks = ("mrpc", "rte") if base_seed == 0 else ("mrpc",)
        for task in tasks:
            make_job(sweep / f"{task}{base_seed}", task=task, stage="finetune",
                     metrics=mrpc(0.8, 0.9), extra={"model": {"from_run": str(base)}})  # fmt: skip
    table = build_table([sweep])
    assert table.rows[0].average is None
    assert (
        "({0 (upstream runs: 0)} vs {0 (upstream runs: 0), 0 (upstream runs: 1)})"
        in (table.warnings[0])
    )


def test_failed_seed_marks_the_cell_partial_with_its_error(sweep):
    make_job(sweep / "a", seed=0, metrics=mrpc(0.8, 0.9))
    make_job(sweep / "b", seed=1, status="failed", error="boom\ntrace")
    cell = build_table([sweep]).rows[0].cells[0]
    assert (cell.status, cell.completed, cell.failed) == ("partial", 1, 1)
    assert cell.errors == [f"{(sweep / 'b').resolve()}: boom"]


def test_cell_with_only_failed_jobs_is_failed_without_average(sweep):
    make_job(sweep / "a", task="rte", metrics={"eval/accuracy": 0.7})
    make_job(sweep / "b", status="failed", error="boom")
    row = build_table([sweep]).rows[0]
    assert [c.status for c in row.cells] == ["failed", "ok"]
    assert row.average is None


def test_sparsity_comes_from_metrics(sweep):
    make_job(sweep / "a", mask="no_diag", metrics=mrpc(0.8, 0.9, sparsity=78.125))
    assert build_table([sweep]).rows[0].sparsity == 78.125


def test_sparsity_falls_back_to_the_search_input_mask_json(sweep):
    search = sweep.parents[2] / "search" / "pipeline-abc"
    (search / "artifacts").mkdir(parents=True)
    (search / "artifacts" / "mask.json").write_text(json.dumps({"sparsity": {"overall": 91.5}}))
    inputs = {"search": {"run_dir": str(search.resolve()), "stage": "search"}}
    make_job(sweep / "a", mask="dam", status="failed", error="x", inputs=inputs)
    assert build_table([sweep]).rows[0].sparsity == 91.5


def test_input_outside_the_runs_folder_is_ignored_with_a_warning(sweep, tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "artifacts").mkdir(parents=True)
    (outside / "artifacts" / "mask.json").write_text(json.dumps({"sparsity": 50.0}))
    inputs = {"search": {"run_dir": str(outside.resolve()), "stage": "search"}}
    make_job(sweep / "a", mask="dam", status="failed", error="x", inputs=inputs)
    table = build_table([sweep])
    assert table.rows[0].sparsity is None
    assert len(table.warnings) == 1 and str(outside.resolve()) in table.warnings[0]


def make_pretrain(
    runs_dir: Path, name: str, mlm_loss: float, status: str = "completed", **metrics: float
) -> dict:
    """A pre-training run folder with its held-out metrics (`metrics`: more of them, by their
    names without `eval/`); returns a manifest `inputs` entry."""
    folder = make_job(
        runs_dir / "pretrain" / name,
        stage="pretrain",
        status=status,
        metrics={"eval/mlm_loss": mlm_loss, **{f"eval/{k}": v for k, v in metrics.items()}},
    )
    return {"run_dir": str(folder.resolve()), "stage": "pretrain"}


def test_mlm_loss_is_taken_once_per_pretraining_the_results_descend_from(tmp_path):
    runs_dir = tmp_path / "runs"
    sweep = runs_dir / "pipeline" / "multirun" / "s"
    for seed, loss in enumerate([6.0, 6.4]):
        pretrain = make_pretrain(runs_dir, f"p{seed}", loss)
        for task in ("rte", "mrpc"):  # two tasks fine-tuned from one pre-training
            make_job(
                sweep / f"{task}{seed}",
                task=task,
                seed=seed,
                inputs={"pretrain": pretrain},
                metrics=mrpc(0.8, 0.9),
            )
    row = build_table([sweep]).rows[0]
    stat = row.mlm_loss
    assert (stat.n, stat.mean) == (2, pytest.approx(6.2))
    assert row.mlm_accuracy.n == 0 and row.gate == (0, 0)  # runs from before accuracy and gate
    assert stat.std == pytest.approx(0.28284271)


def test_mlm_loss_is_found_through_evaluate_and_finetune_inputs(tmp_path):
    runs_dir = tmp_path / "runs"
    pretrain = make_pretrain(runs_dir, "p", 5.5)
    finetune = make_job(
        runs_dir / "finetune" / "f", stage="finetune", inputs={"model": pretrain}, metrics={}
    )
    make_job(
        runs_dir / "evaluate" / "e",
        stage="evaluate",
        metrics=mrpc(0.8, 0.9),
        inputs={"model": {"run_dir": str(finetune.resolve()), "stage": "finetune"}},
    )
    assert build_table([runs_dir / "evaluate"]).rows[0].mlm_loss.mean == 5.5


def test_no_mlm_loss_without_a_completed_pretraining_upstream(tmp_path):
    runs_dir = tmp_path / "runs"
    failed = make_pretrain(runs_dir, "p", 5.5, status="failed")
    make_job(runs_dir / "pipeline" / "a", inputs={"pretrain": failed}, metrics=mrpc(0.8, 0.9))
    make_job(runs_dir / "pipeline" / "b", seed=1, metrics=mrpc(0.8, 0.9))
    assert build_table([runs_dir / "pipeline"]).rows[0].mlm_loss.n == 0


def test_a_standalone_evaluate_run_is_placed_by_the_finetune_run_it_evaluated(tmp_path):
    runs_dir = tmp_path / "runs"
    finetune = make_job(
        runs_dir / "finetune" / "f", stage="finetune", mask="star", task="rte", seed=3, metrics={}
    )
    make_job(  # its own config: the stage defaults (task polarity, seed 0)
        runs_dir / "evaluate" / "e",
        stage="evaluate",
        task="polarity",
        metrics={"eval/accuracy": 0.7},
        inputs={"model": {"run_dir": str(finetune.resolve()), "stage": "finetune"}},
    )
    table = build_table([runs_dir / "evaluate"])
    assert [c.label for c in table.columns] == ["RTE"]
    assert [r.label for r in table.rows] == ["star"]
    assert table.rows[0].cells[0].seeds == [3]


def test_a_run_consumed_by_a_reported_pipeline_counts_once(tmp_path):
    runs_dir = tmp_path / "runs"
    evaluate = make_job(runs_dir / "evaluate" / "e1", stage="evaluate", metrics=mrpc(0.5, 0.5))
    inputs = {"evaluate": {"run_dir": str(evaluate.resolve()), "stage": "evaluate"}}
    make_job(runs_dir / "pipeline" / "p1", inputs=inputs, metrics=mrpc(0.8, 0.9))
    cell = build_table([runs_dir]).rows[0].cells[0]
    assert (cell.completed, cell.values["acc"].mean) == (1, 80.0)


def test_single_finetune_runs_and_globs_are_reported(tmp_path):
    runs_dir = tmp_path / "runs"
    make_job(runs_dir / "finetune" / "r1", stage="finetune", seed=1, metrics=mrpc(0.8, 0.9))
    make_job(runs_dir / "finetune" / "r2", stage="finetune", seed=2, metrics=mrpc(0.6, 0.7))
    cell = build_table([runs_dir / "finetune" / "r*"]).rows[0].cells[0]
    assert (cell.completed, cell.values["acc"].mean) == (2, 70.0)


def test_custom_row_and_column_keys_group_by_those_values(sweep):
    make_job(sweep / "a", mask="dam", lam=0.001, task="rte", metrics={"eval/headline": 0.5})
    make_job(sweep / "b", mask="dam", lam=0.01, task="rte", metrics={"eval/headline": 0.6})
    table = build_table([sweep], rows=["mask.lam"], cols=["mask.name"])
    assert [r.label for r in table.rows] == ["mask.lam=0.001", "mask.lam=0.01"]
    assert [c.label for c in table.columns] == ["mask.name=dam"]
    assert table.columns[0].metrics == [("acc", "eval/accuracy")]


def test_override_spellings_of_one_number_are_one_value():
    assert canonical("1e-3") == canonical("0.001") == canonical(0.001) == 0.001


def test_folder_without_result_runs_is_an_error(tmp_path):
    with pytest.raises(SparseBertError, match="no pipeline, finetune, evaluate or pretrain run"):
        build_table([tmp_path])


def test_a_search_run_is_pointed_to_its_figures(tmp_path):
    search = make_job(tmp_path / "search" / "s", stage="search")
    with pytest.raises(SparseBertError, match=f"report --figures {search}"):
        build_table([tmp_path / "search"])


def test_missing_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(SparseBertError, match="nope does not exist"):
        build_table([tmp_path / "nope"])


def test_a_name_too_long_for_the_system_is_missing_too(tmp_path):
    """os.stat raises ENAMETOOLONG for a 300-character name: the same error, no traceback."""
    with pytest.raises(SparseBertError, match="does not exist"):
        build_table([tmp_path / ("x" * 300)])


DEMO = {"model": {"hidden_size": 128}, "trainer": {"max_steps": 100}}
SMOKE = {"model": {"hidden_size": 64}, "trainer": {"max_steps": 4}}


def test_a_demo_and_a_smoke_sweep_under_one_path_are_not_pooled(tmp_path):
    multirun = tmp_path / "runs" / "pipeline" / "multirun"
    make_job(multirun / "demo" / "a", extra=DEMO, metrics=mrpc(0.8, 0.9))
    make_job(multirun / "smoke" / "a", extra=SMOKE, metrics=mrpc(0.5, 0.6))
    table = build_table([multirun])
    cell = table.rows[0].cells[0]
    assert cell.status == "mixed"
    assert cell.values["acc"].mean is None and table.rows[0].average is None
    [warning] = table.warnings
    assert warning.startswith("dense × MRPC: mixed configs: 2 runs of 2 different configs")
    assert "model.hidden_size: 128 | 64" in warning and "trainer.max_steps: 100 | 4" in warning


def test_a_row_with_a_mixed_cell_says_its_mlm_columns_are_left_empty_too(tmp_path):
    """The MLM loss, accuracy and gate of such a row were left empty without a word (found by a
    sweeps review)."""
    runs_dir = tmp_path / "runs"
    multirun = runs_dir / "pipeline" / "multirun"
    for name, extra in (("demo", DEMO), ("smoke", SMOKE)):
        pretrain = make_pretrain(runs_dir, name, 5.5)
        make_job(multirun / name / "a", extra=extra, inputs={"pretrain": pretrain},
                 metrics=mrpc(0.8, 0.9))  # fmt: skip
    table = build_table([multirun])
    assert table.rows[0].mlm_loss.n == 0
    assert table.warnings[1] == (
        "dense: no MLM loss, accuracy or gate either: the pre-trainings of a row whose runs are "
        "not pooled are not pooled; one config per cell shows them."
    )


def test_runs_of_one_pattern_that_differ_in_a_setting_it_does_not_read_pool(sweep, tmp_path):
    """`mask=window mask.stride=1,3`: window never reads stride, the runs trained one mask; the
    cell read "mixed configs". Another window width is another mask."""
    for seed, stride in enumerate((1, 3, 1)):
        extra = {"mask": {"window": 8, "stride": stride}}
        make_job(sweep / f"s{seed}", mask="window", seed=seed, extra=extra, metrics=mrpc(0.8, 0.9))
    cell = build_table([sweep]).rows[0].cells[0]
    assert cell.status == "ok" and cell.completed == 3
    wider = tmp_path / "runs" / "pipeline" / "multirun" / "wide"
    make_job(wider / "a", mask="window", extra={"mask": {"window": 8}}, metrics=mrpc(0.8, 0.9))
    make_job(wider / "b", mask="window", seed=1, extra={"mask": {"window": 16}})
    assert build_table([wider]).rows[0].cells[0].status == "mixed"


def test_a_row_of_runs_of_different_masks_shows_no_mean_sparsity(sweep):
    """Two window widths in one row (mixed configs, not pooled) showed the mean of their
    sparsities, a mask that was never trained; runs of one mask that are mixed for another
    reason (another max_steps, a repeated seed) keep their mean sparsity."""
    for seed, window in enumerate((8, 16)):
        make_job(sweep / f"w{window}", mask="window", seed=seed,
                 extra={"mask": {"window": window}}, metrics=mrpc(0.8, 0.9, 80.0 - window))  # fmt: skip
    for seed, steps in enumerate((4, 8)):
        make_job(sweep / f"d{steps}", seed=seed, extra={"trainer": {"max_steps": steps}},
                 metrics=mrpc(0.8, 0.9, 0.0))  # fmt: skip
    for steps in (4, 4):  # one DAM config, seed 0 twice: mixed (duplicate seeds), one mask
        make_job(sweep / f"dam{steps}-{len(list(sweep.glob('dam*')))}", mask="dam",
                 metrics=mrpc(0.8, 0.9, 50.0 + len(list(sweep.glob("dam*")))))  # fmt: skip
    rows = {row.label: row for row in build_table([sweep]).rows}
    assert {rows[label].cells[0].status for label in ("window", "dense", "DAM_u λ=0.0001")} == {
        "mixed"
    }
    assert rows["window"].sparsity is None and rows["dense"].sparsity == 0.0
    assert rows["DAM_u λ=0.0001"].sparsity == 50.5


def test_a_seed_repeated_in_one_config_is_not_pooled(sweep):
    make_job(sweep / "a", seed=0, extra=DEMO, metrics=mrpc(0.8, 0.9))
    make_job(sweep / "b", seed=0, extra=DEMO, metrics=mrpc(0.7, 0.8))
    make_job(sweep / "c", seed=1, extra=DEMO, metrics=mrpc(0.7, 0.8))
    table = build_table([sweep])
    assert table.rows[0].cells[0].status == "mixed"
    assert "duplicate seeds: seed 0 appears in more than one run" in table.warnings[0]
    assert "its 3 runs are 2 replicate(s), not 3" in table.warnings[0]


def test_replicates_differing_in_seed_and_launch_settings_are_pooled(sweep):
    make_job(
        sweep / "a",
        seed=0,
        extra={**DEMO, "run_id": "x", "paths": {"runs_dir": "/a"}, "model": {"from_run": "/p0"}},
        metrics=mrpc(0.8, 0.9),
    )
    make_job(
        sweep / "b",
        seed=1,
        extra={**DEMO, "run_id": "y", "paths": {"runs_dir": "/b"}, "model": {"from_run": "/p1"}},
        metrics=mrpc(0.7, 0.8),
    )
    table = build_table([sweep])
    assert (table.rows[0].cells[0].status, table.warnings) == ("ok", [])


def test_settings_a_fixed_pattern_does_not_read_do_not_split_it_but_its_own_do(sweep):
    make_job(sweep / "a", seed=0, lam=0.001, metrics=mrpc(0.8, 0.9))
    make_job(sweep / "b", seed=1, lam=0.01, metrics=mrpc(0.7, 0.8))
    make_job(
        sweep / "c", mask="window", seed=0, extra={"mask": {"window": 4}}, metrics=mrpc(0.8, 0.9)
    )
    make_job(
        sweep / "d", mask="window", seed=1, extra={"mask": {"window": 8}}, metrics=mrpc(0.7, 0.8)
    )
    dense, window = build_table([sweep]).rows
    assert (dense.cells[0].status, window.cells[0].status) == ("ok", "mixed")


def test_a_pretraining_sweep_is_reported_by_its_own_mlm_numbers_paired_with_dense(tmp_path):
    """Continued pre-training with each mask: no task columns; the same-seed difference to dense;
    a mask=from_run row named by the searched mask's kind and target."""
    from sparsebert_cli.masks.config import META_FILE

    sweep = tmp_path / "runs" / "pretrain" / "multirun" / "study"
    search = tmp_path / "runs" / "search" / "s"
    (search / "artifacts").mkdir(parents=True)
    (search / "artifacts" / META_FILE).write_text(json.dumps(
        {"kind": "attention_topk", "target_sparsity": 80.0, "sparsity": {"overall": 80.0}}
    ))  # fmt: skip
    losses = {"dense": [5.0, 5.4], "no_diag": [5.1, 5.3], "from_run": [5.2, 5.8]}
    for mask, by_seed in losses.items():
        for seed, loss in enumerate(by_seed):
            extra = {"mask": {"from_run": str(search)}} if mask == "from_run" else None
            metrics = {"eval/mlm_loss": loss, "eval/mlm_accuracy": 0.25, "eval/uses_attention": 1.0}
            make_job(sweep / f"{mask}-{seed}", mask=mask, seed=seed, stage="pretrain",
                     metrics=metrics, extra=extra)  # fmt: skip
    make_job(sweep / "star-0", mask="star", stage="pretrain", status="failed", error="boom")
    table = build_table([sweep])
    assert table.columns == []
    rows = {row.label: row for row in table.rows}
    assert list(rows) == ["dense", "no_diag", "star", "attention_topk t=0.8"]
    assert rows["no_diag"].mlm_delta.mean == pytest.approx(0.0)  # +0.1 and −0.1
    assert rows["no_diag"].mlm_delta.std == pytest.approx(0.1414213)
    assert rows["attention_topk t=0.8"].mlm_delta.mean == pytest.approx(0.3)
    assert rows["attention_topk t=0.8"].mlm_loss.mean == pytest.approx(5.5)
    assert rows["dense"].gate == (2, 2) and rows["star"].mlm_loss.n == 0  # failed: no numbers
    # rows by more keys: the dense row of the same non-mask keys is still the peer
    by_seed = {row.label: row for row in build_table([sweep], rows=["mask.name", "seed"]).rows}
    assert by_seed["mask.name=no_diag, seed=1"].mlm_delta.mean == pytest.approx(-0.1)
    by_mask = build_table([sweep], rows=["mask.name", "mask.window"]).rows
    no_diag = {row.label: row for row in by_mask}["mask.name=no_diag, mask.window=None"]
    assert no_diag.mlm_delta.mean == pytest.approx(0.0)
    text = to_markdown(table)
    assert "| attention_topk t=0.8 |" in text and "MLM loss − dense (same seed)" in text
    assert "Avg" not in text.splitlines()[0]


def test_interrupted_runs_are_counted_as_interrupted_not_running(sweep):
    """A Ctrl-C'd seed read `1 running`; a rerun resumes it, nothing is running."""
    make_job(sweep / "a", seed=0, metrics=mrpc(0.8, 0.9))
    make_job(sweep / "b", seed=1, status="interrupted")
    make_job(sweep / "c", mask="no_diag", status="interrupted")
    cells = {row.label: row.cells[0] for row in build_table([sweep]).rows}
    dense = cells["dense"]
    assert (dense.status, dense.interrupted, dense.running) == ("partial", 1, 0)
    assert cells["no_diag"].status == "interrupted"
    text = to_markdown(build_table([sweep]))
    assert "(n=1), 1 interrupted |" in text and "| interrupted |" in text
    assert "running" not in text


def test_pre_training_results_show_their_failed_and_mixed_runs(tmp_path):
    """A pretrain sweep with a failed job showed nothing of it (not in the table, no Failed runs
    list), and one of two configs dropped the MLM columns, headers included."""
    sweep = tmp_path / "runs" / "pretrain" / "multirun" / "lr"
    metrics = {"eval/mlm_loss": 7.5, "eval/mlm_accuracy": 0.1}
    make_job(sweep / "ok", stage="pretrain", metrics=metrics)
    make_job(sweep / "bad", stage="pretrain", seed=1, status="failed", error="loss is nan\nmore")
    text = to_markdown(build_table([sweep]))
    assert "| dense | n/a | 7.500 (n=1), 1 failed | 10.0 (n=1) | n/a |" in text
    assert f"Failed runs:\n- {sweep / 'bad'}: loss is nan" in text
    make_job(sweep / "other", stage="pretrain", seed=2, metrics=metrics,
             extra={"trainer": {"lr": 2e-3}})  # fmt: skip
    table = build_table([sweep])
    assert table.rows[0].pretraining.status == "mixed"
    text = to_markdown(table)
    assert text.splitlines()[0] == "| mask | sparsity % | MLM loss | MLM acc. % | gate |"
    assert "| dense | n/a | mixed configs (n=2) | n/a | n/a |" in text
    only_failed = tmp_path / "runs" / "pretrain" / "multirun" / "failed"
    make_job(only_failed / "bad", stage="pretrain", status="failed", error="boom")
    table = build_table([only_failed])
    assert "| dense | n/a | failed | n/a | n/a |" in to_markdown(table)
    assert "pretraining status" in to_csv(table) and to_csv(table).rstrip().endswith(",failed,")
    assert f"failed: {only_failed / 'bad'}: boom" in to_text(table)  # the terminal table too
    make_job(only_failed / "stopped", stage="pretrain", seed=1, status="interrupted")
    assert "| dense | n/a | failed, 1 interrupted | n/a | n/a |" in to_markdown(
        build_table([only_failed])
    )


def test_pre_trainings_with_masks_searched_at_other_lambdas_are_rows_of_their_own(tmp_path):
    """`pretrain -m mask=from_run mask.from=A,B` of two λ-steered searches: one row each, named
    by kind and λ, not one row of two masks (72.6 % and 94.8 % sparse) pooled."""
    from sparsebert_cli.masks.config import META_FILE

    sweep = tmp_path / "runs" / "pretrain" / "multirun" / "lams"
    for name, lam, loss in (("a", 1e-4, 5.0), ("b", 1e-2, 6.0)):
        search = tmp_path / "runs" / "search" / name
        (search / "artifacts").mkdir(parents=True)
        meta = {"kind": "dam_u", "params": {"lam": lam}, "sparsity": {"overall": 80.0}}
        (search / "artifacts" / META_FILE).write_text(json.dumps(meta))
        make_job(sweep / name, mask="from_run", stage="pretrain", metrics={"eval/mlm_loss": loss},
                 extra={"mask": {"from_run": str(search)}})  # fmt: skip
    table = build_table([sweep])
    assert [(row.label, row.mlm_loss.mean) for row in table.rows] == [
        ("dam_u λ=0.0001", 5.0),
        ("dam_u λ=0.01", 6.0),
    ]
    assert table.warnings == []


def test_pre_trainings_of_different_configs_or_one_seed_are_not_pooled(tmp_path):
    """Two sweeps of pre-trainings reported together: the dense row holds a 4-step and a 40-step
    run of seed 0, so neither its MLM loss nor the others' difference to it is a mean."""
    sweep = tmp_path / "runs" / "pretrain" / "multirun"
    for name, mask, seed, steps, loss in (
        ("short/dense-0", "dense", 0, 4, 10.0),
        ("short/dense-1", "dense", 1, 4, 10.2),
        ("short/no_diag-0", "no_diag", 0, 4, 10.1),
        ("long/dense-0", "dense", 0, 40, 7.0),
    ):
        make_job(sweep / name, mask=mask, seed=seed, stage="pretrain",
                 metrics={"eval/mlm_loss": loss}, extra={"trainer": {"max_steps": steps}})  # fmt: skip
    table = build_table([sweep / "short", sweep / "long"])
    rows = {row.label: row for row in table.rows}
    assert rows["dense"].mlm_loss.n == 0
    assert rows["no_diag"].mlm_loss.mean == pytest.approx(10.1)
    assert rows["no_diag"].mlm_delta.n == 0  # against which dense run of seed 0?
    assert [w.split(":")[0] for w in table.warnings] == ["dense × MLM loss"]
    assert "mixed configs" in table.warnings[0] and "trainer.max_steps" in table.warnings[0]
    alone = {row.label: row for row in build_table([sweep / "short"]).rows}
    assert alone["no_diag"].mlm_delta.mean == pytest.approx(0.1)


def test_continuations_of_two_checkpoints_pair_with_the_dense_run_of_their_own(tmp_path):
    """Dense and no_diag continued from two replicate checkpoints (seeds 0, 1) with seed 0: each
    no_diag run pairs with the dense run of its checkpoint; both dense runs had the same
    (config, seed) key and the last one read was every no_diag run's peer."""
    runs_dir = tmp_path / "runs"
    sweep = runs_dir / "pretrain" / "multirun" / "study"
    for base_seed, base_loss in ((0, 5.0), (1, 6.0)):
        base = make_job(runs_dir / "pretrain" / f"base{base_seed}", seed=base_seed,
                        stage="pretrain", metrics={"eval/mlm_loss": 7.0})  # fmt: skip
        for mask, loss in (("dense", base_loss), ("no_diag", base_loss + 0.1)):
            make_job(sweep / f"{mask}-{base_seed}", mask=mask, stage="pretrain",
                     metrics={"eval/mlm_loss": loss}, extra={"model": {"from_run": str(base)}})  # fmt: skip
    rows = {row.label: row for row in build_table([sweep]).rows}
    assert rows["no_diag"].mlm_delta.n == 2
    assert rows["no_diag"].mlm_delta.mean == pytest.approx(0.1)


def test_a_mixed_cell_leaves_its_rows_pre_training_numbers_unpooled(tmp_path):
    """Two pipelines of seed 0 with other learning rates: the cell refuses to pool them, and so
    does the MLM loss of their two pre-trainings."""
    runs_dir = tmp_path / "runs"
    for name, lr, loss in (("a", 1e-3, 5.0), ("b", 1e-2, 9.0)):
        pretrain = make_pretrain(runs_dir, f"p{name}", loss)
        make_job(runs_dir / "pipeline" / name, inputs={"pretrain": pretrain},
                 metrics=mrpc(0.8, 0.8), extra={"trainer": {"lr": lr}})  # fmt: skip
    row = build_table([runs_dir / "pipeline"]).rows[0]
    assert row.cells[0].problem.startswith("mixed configs") and row.mlm_loss.n == 0


def test_pretrain_runs_beside_results_are_upstream_not_rows(tmp_path):
    runs_dir = tmp_path / "runs"
    pretrain = make_pretrain(runs_dir, "p", 5.5)
    make_job(runs_dir / "pipeline" / "a", inputs={"pretrain": pretrain}, metrics=mrpc(0.8, 0.9))
    table = build_table([runs_dir])
    assert [row.label for row in table.rows] == ["dense"] and table.rows[0].mlm_delta.n == 0
    assert table.rows[0].mlm_loss.mean == 5.5


def _upstream(folder: Path, config: dict) -> str:
    """An upstream run folder holding only its resolved config (what the reference stands for)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return str(folder)


def test_results_built_on_different_upstream_experiments_are_not_pooled(tmp_path):
    """Two fine-tunes of models pre-trained with different masks are two experiments, not two
    runs of one seed to delete: each row is named by its model's mask; models that differ in
    something else share a row that says to split by the model."""
    runs = tmp_path / "runs"
    upstream = {
        "window": {"seed": 0, "mask": {"name": "window"}},
        "dense": {"seed": 0, "mask": {"name": "dense"}},
        "dense_long": {"seed": 0, "mask": {"name": "dense"}, "trainer": {"max_steps": 9}},
    }
    models = {name: _upstream(runs / "pretrain" / name, cfg) for name, cfg in upstream.items()}
    for name, model in models.items():
        make_job(
            runs / "finetune" / name,
            mask="checkpoint",
            stage="finetune",
            extra={"model": {"from_run": model}},
            metrics=mrpc(0.8, 0.9),
        )
    table = build_table([runs / "finetune"])
    assert [r.label for r in table.rows] == ["dense (checkpoint)", "window (checkpoint)"]
    [warning] = table.warnings  # the two dense models differ in their own max_steps
    assert warning.startswith("dense (checkpoint) × MRPC: mixed configs")
    assert "model.from_run.trainer.max_steps" in warning and "duplicate seeds" not in warning
    assert "add model.from_run to --rows" in warning
    table = build_table([runs / "finetune"], rows=["model.from_run"])
    assert table.warnings == [] and len(table.rows) == 3


def test_fine_tunes_of_models_that_are_no_runs_are_named_by_their_model(tmp_path):
    """model=minilm and model=hf with mask=checkpoint were one row, `checkpoint`, with a
    mixed-configs warning: the mask is the model's, so the model names the row."""
    runs = tmp_path / "runs"
    for name in ("embedded:minilm", "bert-base-uncased"):
        make_job(
            runs / "finetune" / name.replace(":", "_"),
            mask="checkpoint",
            stage="finetune",
            extra={"model": {"name_or_path": name}},
            metrics=mrpc(0.8, 0.9),
        )
    table = build_table([runs / "finetune"])
    assert [r.label for r in table.rows] == [
        "checkpoint of bert-base-uncased",
        "checkpoint of embedded:minilm",
    ]
    assert table.warnings == []
    # a fine-tune of a run's model (finetune's default model=minilm still names MiniLM) whose
    # run is no longer readable is not taken for a fine-tune of MiniLM
    make_job(
        runs / "finetune" / "moved",
        mask="checkpoint",
        stage="finetune",
        extra={"model": {"name_or_path": "embedded:minilm", "from_run": str(tmp_path / "gone")}},
        metrics=mrpc(0.8, 0.9),
    )
    table = build_table([runs / "finetune"])
    assert [r.label for r in table.rows] == [
        "checkpoint",
        "checkpoint of bert-base-uncased",
        "checkpoint of embedded:minilm",
    ]
    assert [r.cells[0].completed for r in table.rows] == [1, 1, 1]


def test_results_built_on_replicates_of_one_upstream_experiment_pool_by_their_seeds(tmp_path):
    """Fine-tunes with seed 0 using masks searched with seeds 0 and 1 are two replicates; two
    with the same search seed as well are one, repeated."""
    runs = tmp_path / "runs"
    searches = [
        _upstream(runs / "search" / f"s{i}", {"seed": seed, "mask": {"name": "dam", "lam": 1}})
        for i, seed in enumerate((0, 1, 1))
    ]
    for i, search in enumerate(searches[:2]):
        make_job(
            runs / "finetune" / "two" / f"p{i}",
            mask="from_run",
            stage="finetune",
            extra={"mask": {"from_run": search}},
            metrics=mrpc(0.8 - i / 10, 0.9),
        )
    table = build_table([runs / "finetune" / "two"])
    assert (table.rows[0].cells[0].status, table.rows[0].cells[0].completed) == ("ok", 2)
    assert table.warnings == []
    make_job(
        runs / "finetune" / "two" / "p2",
        mask="from_run",
        stage="finetune",
        extra={"mask": {"from_run": searches[2]}},
        metrics=mrpc(0.7, 0.9),
    )
    [warning] = build_table([runs / "finetune" / "two"]).warnings
    assert "duplicate seeds: seed 0 (upstream runs: 1) appears in more than one run" in warning


def test_the_folds_of_an_embedded_task_pool_like_seeds(sweep):
    """conf/task/polarity.yaml asks for the mean over task.fold=0..4: a fold sweep read
    `mixed configs`; a fold repeated with the same seed is a duplicate."""
    for fold, acc in enumerate([0.6, 0.7]):
        make_job(sweep / f"f{fold}", task="polarity", extra={"task": {"fold": fold}},
                 metrics={"eval/headline": acc})  # fmt: skip
    table = build_table([sweep])
    cell = table.rows[0].cells[0]
    assert (cell.status, cell.completed, table.warnings) == ("ok", 2, [])
    assert cell.values[""].mean == pytest.approx(65.0)
    make_job(sweep / "again", task="polarity", extra={"task": {"fold": 1}},
             metrics={"eval/headline": 0.5})  # fmt: skip
    [warning] = build_table([sweep]).warnings
    assert "duplicate seeds: seed 0 (fold 1) appears" in warning


def test_a_mixed_configs_warning_names_the_chosen_mask_first():
    from sparsebert_cli.differences import differences

    configs = [{"mask": {"c": 0, "density": 0.1, "name": "dense"}},
               {"mask": {"c": None, "density": None, "name": "dam"}}]  # fmt: skip
    assert differences(configs)[0] == 'mask.name: "dense" | "dam"'


def test_a_row_whose_columns_used_different_masks_shows_no_sparsity_or_average(sweep):
    """Each cell one window width, RTE at 8 and MRPC at 4: no cell was mixed, so the row showed
    the mean of two masks' sparsities and an Average across them, without a warning."""
    for seed in (0, 1):
        make_job(sweep / f"r{seed}", mask="window", task="rte", seed=seed,
                 metrics={"eval/accuracy": 0.6, "mask/sparsity": 87.16},
                 extra={"mask": {"window": 8}})  # fmt: skip
        make_job(sweep / f"m{seed}", mask="window", seed=seed, metrics=mrpc(0.8, 0.9, 93.0),
                 extra={"mask": {"window": 4}})  # fmt: skip
    table = build_table([sweep])
    (row,) = table.rows
    assert [cell.status for cell in row.cells] == ["ok", "ok"]
    assert (row.sparsity, row.average) == (None, None)
    (warning,) = table.warnings
    assert warning.startswith(
        "window: its columns were run with different masks (mask.window: 4 | 8"
    )
    assert "add the differing key to --rows" in warning
    split = build_table([sweep], rows=["mask.name", "mask.window"])
    assert not split.warnings and [r.sparsity for r in split.rows] == [93.0, 87.16]


def test_fine_tunes_of_models_with_different_masks_share_no_sparsity_or_average(tmp_path):
    """mask=checkpoint runs all read {name: checkpoint}: fine-tunes of a window=8 and a window=4
    pre-training formed one `window (checkpoint)` row with the mean of their sparsities and an
    Average across them, and no warning."""
    runs_dir = tmp_path / "runs"
    sweep = runs_dir / "finetune" / "multirun" / "s"
    for window, task, sparsity in ((8, "mrpc", 87.0), (4, "rte", 93.0)):
        pre = make_job(runs_dir / "pretrain" / f"w{window}", mask="window", stage="pretrain",
                       metrics={"eval/mlm_loss": 5.0}, extra={"mask": {"window": window}})  # fmt: skip
        for seed in (0, 1):
            make_job(sweep / f"{task}{seed}", mask="checkpoint", task=task, seed=seed,
                     stage="finetune", metrics={**mrpc(0.8, 0.9), "mask/sparsity": sparsity},
                     extra={"model": {"from_run": str(pre.resolve())}},
                     inputs={"model": {"run_dir": str(pre.resolve())}})  # fmt: skip
    table = build_table([sweep])
    (row,) = table.rows
    assert row.label == "window (checkpoint)"
    assert (row.sparsity, row.average) == (None, None)
    assert any("mask.window: 8 | 4" in w for w in table.warnings), table.warnings


def test_mlm_loss_minus_dense_pairs_the_same_config_and_every_replicate(tmp_path):
    """Pairs were made by seed alone: a no_diag pre-training at n = 64 and 300 steps was
    subtracted from a dense one at n = 128 and 800 steps; and two DAM pre-trainings with seed 0
    (from searches with seeds 0 and 1) kept one delta of the two."""
    sweep = tmp_path / "runs" / "pretrain" / "multirun" / "s"

    def pretrain(name: str, kind: str, loss: float, **extra) -> None:
        make_job(sweep / name, mask=kind, stage="pretrain", metrics={"eval/mlm_loss": loss},
                 extra={"trainer": {"max_steps": 800}, "data": {"seq_len": 128}, **extra})  # fmt: skip

    pretrain("dense", "dense", 5.0)
    pretrain("short", "no_diag", 5.5, trainer={"max_steps": 300}, data={"seq_len": 64})
    for seed in (0, 1):
        search = make_job(tmp_path / "runs" / "search" / f"s{seed}", mask="dam_s", seed=seed,
                          stage="search")  # fmt: skip
        pretrain(f"dam{seed}", "from_run", 5.1 + 0.2 * seed,
                 mask={"name": "from_run", "from_run": str(search.resolve())})  # fmt: skip
    table = build_table([sweep])
    rows = {r.label: r for r in table.rows}
    assert rows["no_diag"].mlm_delta.n == 0
    assert any(w.startswith("no_diag: 1 pre-training(s) have no dense run") for w in table.warnings)
    dam = next(r for label, r in rows.items() if label not in ("dense", "no_diag"))
    assert (dam.mlm_delta.n, dam.mlm_delta.mean) == (2, pytest.approx(0.2))


def test_a_row_with_a_partial_cell_has_no_average(sweep):
    """The Average pooled a one-seed MRPC (its other seed failed) with a two-seed RTE, and moved
    while the sweep ran."""
    make_job(sweep / "m0", task="mrpc", seed=0, metrics=mrpc(0.8, 0.9))
    make_job(sweep / "m1", task="mrpc", seed=1, status="failed", error="out of memory")
    for seed in (0, 1):
        make_job(sweep / f"r{seed}", task="rte", seed=seed, metrics={"eval/accuracy": 0.6})
    table = build_table([sweep])
    (row,) = table.rows
    assert [c.status for c in row.cells] == ["partial", "ok"] and row.average is None
    assert any(w.startswith("dense: no Average while MRPC lack runs") for w in table.warnings)
    (sweep / "m1" / "manifest.json").unlink()  # the failed seed removed: still other seed sets
    assert build_table([sweep]).rows[0].average is None
    (sweep / "r1" / "manifest.json").unlink()  # seed 0 alone in both columns: an Average
    assert build_table([sweep]).rows[0].average == pytest.approx((80 + 90) / 4 + 60 / 2)


def test_a_rows_sparsity_is_of_one_sequence_length(sweep):
    """A window row's sparsity was the mean of its GLUE runs' at n = 128 and its SQuAD runs' at
    n = 384: no mask has that sparsity."""
    for seed in (0, 1):
        make_job(sweep / f"m{seed}", mask="window", seed=seed,
                 metrics={**mrpc(0.8, 0.9, sparsity=85.0), "mask/seq_len": 128})  # fmt: skip
    make_job(sweep / "q0", mask="window", task="squad",
             metrics={"eval/exact": 0.5, "eval/f1": 0.6, "mask/sparsity": 95.0,
                      "mask/seq_len": 384})  # fmt: skip
    table = build_table([sweep])
    (row,) = table.rows
    assert row.sparsity == pytest.approx(85.0)
    assert (
        "window: sparsity shown at n = 128, where most of its runs measured it; 95.0 % at "
        "n = 384 (1 run(s))" in table.warnings
    )


def test_a_hand_run_fine_tune_pools_with_the_pipelines_of_the_same_model(tmp_path):
    """Both start from one pretrain run; the hand run kept finetune's default
    model.name_or_path=embedded:minilm (unread beside model.from), the pipeline step null, and
    the cell read `mixed configs`."""
    runs = tmp_path / "runs"
    pretrained = _upstream(runs / "pretrain" / "p", {"seed": 0, "mask": {"name": "window"}})
    for seed, name in enumerate(("embedded:minilm", None)):
        make_job(runs / "finetune" / "s" / f"f{seed}", mask="checkpoint", stage="finetune",
                 seed=seed, metrics=mrpc(0.8, 0.9),
                 extra={"model": {"from_run": pretrained, "name_or_path": name}})  # fmt: skip
    table = build_table([runs / "finetune" / "s"])
    assert (table.rows[0].cells[0].status, table.rows[0].cells[0].completed) == ("ok", 2)


def test_an_unfinished_run_of_another_config_is_not_counted_in_a_cell(sweep):
    """A stopped 300-step run sat in the cell of completed 40-step runs as `1 interrupted`, with
    no warning, and cost the row its Average: no rerun of the sweep completes it there."""
    make_job(sweep / "done", metrics=mrpc(0.8, 0.9), extra={"trainer": {"max_steps": 40}})
    make_job(sweep / "stopped", seed=1, status="interrupted", extra={"trainer": {"max_steps": 300}})
    table = build_table([sweep])
    cell = table.rows[0].cells[0]
    assert cell.status == "mixed" and "trainer.max_steps: 40 | 300" in cell.problem
    assert any("1 unfinished run(s) of another config" in w for w in table.warnings)
    make_job(sweep / "again", seed=1, status="interrupted", extra={"trainer": {"max_steps": 40}})
    shutil.rmtree(sweep / "stopped")
    assert build_table([sweep]).rows[0].cells[0].status == "partial"  # the same config: counted


@pytest.mark.parametrize(
    "damage, said",
    [
        (lambda job: (job / "config.yaml").write_text("mask: {name: [dense\n"), "is damaged"),
        (lambda job: (job / ".hydra" / "overrides.yaml").write_text("- task: [x\n"), "is damaged"),
        (lambda job: (job / "config.yaml").unlink(), "config.yaml is missing"),
        (lambda job: (job / "metrics.json").unlink(), "it completed but has no metrics.json"),
    ],
    ids=["config not YAML", "overrides not YAML", "no config", "completed without metrics"],
)
def test_a_run_with_a_damaged_or_missing_file_is_skipped_with_a_warning(sweep, damage, said):
    """A config or overrides file that is not YAML ended the report in a yaml traceback; without
    config.yaml the run became a row and column of None, and a completed run without metrics a
    cell of n/a counted as a result, both without a word."""
    make_job(sweep / "good", metrics=mrpc(0.8, 0.9))
    bad = make_job(sweep / "bad", mask="no_diag", metrics=mrpc(0.5, 0.5))
    damage(bad)
    table = build_table([sweep])
    assert [row.label for row in table.rows] == ["dense"]
    assert len(table.warnings) == 1 and table.warnings[0].startswith(f"{bad} skipped: ")
    assert said in table.warnings[0]


def test_a_seed_typed_in_one_sweep_and_left_default_in_another_pools(sweep, tmp_path):
    """`seed=3` typed enters pipeline.inherited, the default seed 0 does not: the two were
    "mixed configs" and could never be pooled; a launch key typed in one sweep is no
    difference either, a setting typed is."""
    other = tmp_path / "runs" / "pipeline" / "multirun" / "s3"
    make_job(sweep / "a", seed=0, extra={"pipeline": {"inherited": ["debug"]}},
             metrics=mrpc(0.8, 0.9))  # fmt: skip
    make_job(other / "a", seed=3, extra={"pipeline": {"inherited": ["debug", "seed",
             "trainer.num_threads", "run_id"]}}, metrics=mrpc(0.7, 0.8))  # fmt: skip
    table = build_table([sweep, other])
    assert (table.rows[0].cells[0].status, table.rows[0].cells[0].completed) == ("ok", 2)
    assert table.warnings == []
    make_job(other / "b", seed=4, extra={"pipeline": {"inherited": ["debug", "model.dropout"]}},
             metrics=mrpc(0.7, 0.8))  # fmt: skip
    assert any("mixed configs" in w for w in build_table([sweep, other]).warnings)


@pytest.mark.parametrize("keep_original", [False, True])
def test_a_moved_runs_folder_reports_as_it_did_where_it_ran(tmp_path, keep_original):
    """Runs synced from a cluster record their inputs at the cluster's paths: every pipeline
    step was counted again beside its pipeline and the pre-training numbers were lost. A copy
    beside its original read the original's runs, outside it: ignored, no MLM columns."""
    runs_dir = tmp_path / "cluster" / "runs"
    pretrain = make_pretrain(runs_dir, "p", 5.5)
    finetune = make_job(
        runs_dir / "finetune" / "f", stage="finetune", inputs={"model": pretrain}, metrics={}
    )
    finetuned = {"run_dir": str(finetune.resolve()), "stage": "finetune"}
    evaluate = make_job(runs_dir / "evaluate" / "e", stage="evaluate", metrics=mrpc(0.5, 0.5),
                        inputs={"model": finetuned})  # fmt: skip
    evaluated = {"run_dir": str(evaluate.resolve()), "stage": "evaluate"}
    make_job(runs_dir / "pipeline" / "multirun" / "s1" / "j", metrics=mrpc(0.8, 0.9),
             inputs={"pretrain": pretrain, "finetune": finetuned, "evaluate": evaluated})  # fmt: skip
    there = build_table([runs_dir])
    moved = tmp_path / "laptop" / "runs"
    (shutil.copytree if keep_original else shutil.move)(runs_dir, moved)
    here = build_table([moved])
    assert (
        [(row.label, row.cells[0].completed, row.mlm_loss.mean) for row in here.rows]
        == [(row.label, row.cells[0].completed, row.mlm_loss.mean) for row in there.rows]
        == [("dense", 1, 5.5)]
    )
    assert here.warnings == there.warnings == []


def test_pre_trainings_no_result_starts_from_are_said_to_be_left_out(tmp_path):
    """`report <pretrain sweep> <finetune sweep>` showed the fine-tunings' rows alone: the
    pre-trainings nothing was fine-tuned from vanished without a word (found by a sweeps review)."""
    runs_dir = tmp_path / "runs"
    used = make_pretrain(runs_dir, "used", 5.5)
    make_pretrain(runs_dir, "apart", 5.9)
    make_job(runs_dir / "pipeline" / "a", inputs={"pretrain": used}, metrics=mrpc(0.8, 0.9))
    table = build_table([runs_dir])
    assert [row.mlm_loss.mean for row in table.rows] == [5.5]
    left_out = [w for w in table.warnings if "left out of the table" in w]
    assert len(left_out) == 1 and left_out[0].startswith("1 pretrain run(s)")
    assert str((runs_dir / "pretrain" / "apart").resolve()) in left_out[0]
    alone = build_table([runs_dir / "pretrain"])  # a pretrain sweep: they are the rows
    assert not [w for w in alone.warnings if "left out of the table" in w]
