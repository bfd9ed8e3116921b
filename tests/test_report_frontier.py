"""`sparsebert report RUNS --frontier`: quality against sparsity and attention time, Pareto rows."""

import csv
import json

import pytest
import torch
from test_report_table import make_job

from sparsebert_cli.masks.artifact import save_mask
from sparsebert_cli.reporting.cli import main
from sparsebert_cli.reporting.frontier import build_frontier, pareto

N, HEADS = 128, 2  # the schema's defaults: what a run that records no model/task size used


@pytest.fixture(autouse=True)
def quick_timing(monkeypatch):
    """Shorter timing samples and fewer rounds: these tests check what is timed, not how well."""
    from sparsebert_cli.reporting import frontier

    monkeypatch.setattr(frontier, "SAMPLE_S", 0.01)
    monkeypatch.setattr(frontier, "TIMING_ROUNDS", 3)


def test_pareto_keeps_the_points_nothing_dominates():
    points = [(75.0, 0.0), (77.0, 1.0), (55.0, 50.0), (65.0, 90.0), (65.0, 90.0), (None, 99.0)]
    assert pareto(points) == [False, True, False, True, True, False]


def test_pareto_of_one_point_is_that_point():
    assert pareto([(1.0, -3.0)]) == [True]


def _job(folder, mask, sparsity, mrpc_acc, rte_acc, keep=None, lam=None):
    """A pipeline job on MRPC and one on RTE for `mask`, its mask artifact beside the model."""
    for task, metrics in (
        ("mrpc", {"eval/accuracy": mrpc_acc, "eval/f1": mrpc_acc}),
        ("rte", {"eval/accuracy": rte_acc}),
    ):
        job = make_job(
            folder / f"{mask}-{task}",
            mask=mask,
            task=task,
            lam=lam,
            metrics={**metrics, "mask/sparsity": sparsity},
        )
        if keep is not None:
            kind = "dam_u" if mask == "dam" else mask
            save_mask(
                job / "artifacts" / "model", keep[None, None].expand(1, HEADS, N, N), {"kind": kind}
            )


@pytest.fixture
def sweep(tmp_path):
    folder = tmp_path / "runs" / "pipeline" / "multirun" / "s1"
    distance = (torch.arange(N)[:, None] - torch.arange(N)[None, :]).abs()
    random = torch.rand(N, N, generator=torch.Generator().manual_seed(0)) > 0.9
    _job(folder, "dense", 0.0, 0.80, 0.70)
    _job(folder, "no_diag", 0.8, 0.82, 0.72, keep=distance > 0)
    _job(folder, "window", 50.0, 0.60, 0.50, keep=distance <= 32)
    _job(folder, "dam", 90.0, 0.70, 0.60, keep=random, lam=1e-3)
    return folder


def test_frontier_rows_carry_quality_sparsity_time_and_pareto_marks(sweep):
    points = {p.label: p for p in build_frontier([sweep])[0]}
    assert set(points) == {"dense", "no_diag", "window", "DAM_u λ=0.001"}
    dense, no_diag = points["dense"], points["no_diag"]
    assert dense.average == pytest.approx(75.0) and dense.backend == "sdpa"
    assert (dense.worst, dense.worst_task) == (pytest.approx(70.0), "RTE")
    assert dense.time_ratio == 1.0 and dense.n == N and dense.ranked_by == "average"
    assert all(p.attention_ms > 0 and p.dense_ms > 0 for p in points.values())
    assert {label for label, p in points.items() if p.pareto_sparsity} == {
        "no_diag",
        "DAM_u λ=0.001",
    }
    assert no_diag.pareto_time  # the best Average is on every frontier
    assert not points["window"].pareto_time or points["window"].time_ratio < no_diag.time_ratio


def test_report_frontier_writes_figure_json_and_csv(sweep, capsys):
    assert main([str(sweep), "--frontier"]) == 0
    data = json.loads((sweep / "frontier.json").read_text())
    assert len(data["points"]) == 4
    with open(sweep / "frontier.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["label"]: r["pareto_sparsity"] for r in rows}["window"] == "False"
    assert (sweep / "frontier.png").stat().st_size > 0
    assert "frontier.png" in capsys.readouterr().out


def test_dam_rows_searched_to_a_target_are_labelled_by_variant_and_target(tmp_path):
    from sparsebert_cli.reporting.table import row_label

    key = {"mask.name": "dam", "mask.structure": "block", "mask.lam": 0.0}
    assert row_label({**key, "mask.target_sparsity": 0.9}, True) == "DAM_b t=0.9"
    assert row_label({**key, "mask.target_sparsity": None}, True) == "DAM_b λ=0"


def test_a_sweep_of_pretrainings_alone_is_ranked_by_mlm_loss(tmp_path):
    """No task Average to rank by: the held-out MLM loss (lower is better) is the quality, and
    n is the pre-training's data.seq_len."""
    folder = tmp_path / "runs" / "pretrain" / "multirun" / "fr"
    distance = (torch.arange(64)[:, None] - torch.arange(64)[None, :]).abs()
    for mask, loss, sparsity, keep in (
        ("dense", 5.0, 0.0, None),
        ("window", 5.5, 80.0, distance <= 6),
        ("no_diag", 5.1, 1.6, distance > 0),
        ("star", 6.0, 70.0, distance <= 3),  # worse than window on both axes
    ):
        metrics = {"eval/mlm_loss": loss, "mask/sparsity": sparsity, "eval/mlm_accuracy": 0.25,
                   "eval/uses_attention": 1.0}  # fmt: skip
        job = make_job(folder / mask, mask=mask, stage="pretrain", metrics=metrics,
                       extra={"data": {"seq_len": 64}})  # fmt: skip
        if keep is not None:
            save_mask(job / "artifacts" / "model", keep.expand(1, HEADS, 64, 64), {"kind": mask})
    points = {p.label: p for p in build_frontier([folder])[0]}
    assert set(points) == {"dense", "window", "no_diag", "star"}
    assert {p.n for p in points.values()} == {64}
    assert {p.ranked_by for p in points.values()} == {"mlm_loss"}
    # what the verdict rests on travels with each point
    assert {(p.mlm_accuracy, p.gate) for p in points.values()} == {(0.25, "1/1 pass")}
    assert {label for label, p in points.items() if p.pareto_sparsity} == {
        "dense",
        "no_diag",
        "window",
    }
    assert main([str(folder), "--frontier"]) == 0
    assert len(json.loads((folder / "frontier.json").read_text())["points"]) == 4
    header = (folder / "frontier.csv").read_text().splitlines()[0].split(",")
    assert {"mlm_accuracy", "gate"} <= set(header)


def test_a_task_sweep_without_any_average_is_not_ranked_by_mlm_loss(tmp_path):
    """Every row misses a task (no Average anywhere), but its results descend from pre-trainings
    with an MLM loss: the frontier still ranks task quality, so it marks nothing, rather than
    ranking the rows by their upstream MLM loss."""
    from test_report_table import make_pretrain

    runs_dir = tmp_path / "runs"
    distance = (torch.arange(N)[:, None] - torch.arange(N)[None, :]).abs()
    for mask, task, loss in (("dense", "mrpc", 5.0), ("window", "rte", 6.0)):
        pretrain = make_pretrain(runs_dir, mask, loss)
        job = make_job(runs_dir / "pipeline" / mask, mask=mask, task=task, inputs={"pretrain": pretrain},
                       metrics={"eval/accuracy": 0.7, "eval/f1": 0.7})  # fmt: skip
        if mask == "window":
            save_mask(job / "artifacts" / "model", (distance <= 8)[None, None].expand(1, HEADS, N, N),
                      {"kind": "window"})  # fmt: skip
    points, _ = build_frontier([runs_dir / "pipeline"])
    assert [p.mlm_loss for p in points] == [5.0, 6.0] and {p.average for p in points} == {None}
    assert {p.ranked_by for p in points} == {"average"}
    assert not any(p.pareto_sparsity or p.pareto_time for p in points)


def test_a_row_whose_mask_is_not_found_is_left_out_not_timed_as_dense(sweep, tmp_path, capsys):
    """A moved runs folder (its inputs outside it) timed every sparse mask as dense: ratio 1."""
    (sweep / "window-mrpc" / "artifacts" / "model" / "mask.safetensors").unlink()
    (sweep / "window-rte" / "artifacts" / "model" / "mask.safetensors").unlink()
    points, warnings = build_frontier([sweep])
    assert {p.label for p in points} == {"dense", "no_diag", "DAM_u λ=0.001"}
    assert warnings == [
        f"window: left out, its mask (50.00 % sparse) was not found beside {sweep / 'window-mrpc'} "
        "or in the runs it names inside its runs folder."
    ]
    assert main([str(sweep), "--frontier"]) == 0
    assert "warning: window: left out" in capsys.readouterr().err


def test_timing_rounds_alternate_and_their_ratios_give_the_time_axis(monkeypatch):
    """Each round times the mask then dense, and the ratio is the median of the rounds' own
    ratios: a load burst that slows one round slows both of its sides."""
    from sparsebert_cli.reporting import frontier

    # calibration (one call each), then rounds of (mask, dense): ratios 1, 0.2, 0.91
    samples = iter([0.001, 0.002, 0.001, 0.001, 0.002, 0.010, 0.010, 0.011])
    calls = []
    monkeypatch.setattr(frontier, "TIMING_ROUNDS", 3)
    monkeypatch.setattr(
        frontier, "_sample", lambda f, repeats: calls.append(repeats) or next(samples)
    )
    ms, dense_ms, ratio = frontier._paired(lambda: None, lambda: None)
    assert calls[:2] == [1, 1] and calls[2:4] == [10, 5]  # samples of ≥ SAMPLE_S (10 ms)
    assert ratio == pytest.approx(10 / 11)  # the rounds' median ratio; medians apart: 0.2
    assert (ms, dense_ms) == (pytest.approx(2.0), pytest.approx(10.0))


def test_attention_is_timed_on_one_thread_and_the_threads_are_restored(monkeypatch):
    """Several threads on a busy machine stall at their barriers (ratios from 0.01 to 60)."""
    from sparsebert_cli.reporting import frontier

    seen = []
    monkeypatch.setattr(frontier, "_time_layers", lambda *a: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        frontier.time_attention(None, 64, 2, 16, 1, 32)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
