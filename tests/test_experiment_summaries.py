"""The study scripts whose numbers the verdicts quote: the pattern table's same-seed pairing and
t-intervals, the importance summary's counts and accuracy curve, and the committed summaries
against their own runs."""

import importlib.util
import json
import statistics

import pytest
from conftest import ROOT
from scipy import stats

STUDY = ROOT / "experiments" / "pattern_table"


def load_summarize(study: str = "pattern_table"):
    """experiments/<study>/summarize.py as a module."""
    path = ROOT / "experiments" / study / "summarize.py"
    spec = importlib.util.spec_from_file_location(f"{study}_summarize", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def job(mask: str, seed: int, loss: float, checkpoint: str = "ckpt-a") -> dict:
    return {
        "mask": mask, "seed": seed, "checkpoint": checkpoint, "loss": loss, "accuracy": 0.2,
        "sparsity": 0.0 if mask == "dense" else 80.0, "gate": 1.0, "neighbour_ratio": 5.0,
        "first_eval": {"step": 100, "loss": loss + 1.0}, "job": f"{mask}-{checkpoint}-{seed}",
    }  # fmt: skip


def test_the_t_quantiles_are_students():
    summarize = load_summarize()
    for df, quantile in summarize.T95.items():
        assert quantile == pytest.approx(stats.t.ppf(0.975, df), abs=5e-4)


def test_a_mask_is_paired_with_the_dense_run_of_its_checkpoint_and_seed():
    """Listed in another order and over two checkpoints, each job meets its own dense run."""
    summarize = load_summarize()
    dense = {(c, s): 5.0 + s + (0.5 if c == "ckpt-b" else 0.0) for c in ("ckpt-a", "ckpt-b")
             for s in (0, 1)}  # fmt: skip
    gaps = {("ckpt-a", 0): -0.02, ("ckpt-a", 1): -0.05, ("ckpt-b", 0): 0.01, ("ckpt-b", 1): -0.04}
    found = [job("window", s, dense[c, s] + gaps[c, s], c) for c, s in reversed(list(gaps))]
    found += [job("dense", s, loss, c) for (c, s), loss in dense.items()]
    row = summarize.summarize(found)["window"]
    differences = list(gaps.values())
    mean, spread = statistics.fmean(differences), statistics.stdev(differences)
    assert row["n_paired"] == 4
    assert row["delta_loss_vs_dense_mean_std"] == pytest.approx([mean, spread])
    half = stats.t.ppf(0.975, 3) * spread / 2
    assert row["delta_loss_95ci"] == pytest.approx([mean - half, mean + half], abs=1e-4)
    assert row["delta_loss_first_eval_mean_std"] == pytest.approx([mean, spread])


def test_two_jobs_of_one_mask_checkpoint_and_seed_are_refused():
    summarize = load_summarize()
    with pytest.raises(SystemExit, match="two window jobs of one checkpoint and seed"):
        summarize.summarize([job("dense", 0, 5.0), job("window", 0, 5.1), job("window", 0, 5.2)])


def test_the_committed_table_is_what_its_runs_give():
    """Each row of results/summary.json against the runs it lists: a summary left stale after a
    rerun, or edited by hand, fails here."""
    rows = json.loads((STUDY / "results" / "summary.json").read_text())
    dense = {run["seed"]: run["loss"] for run in rows["dense"]["runs"]}
    for mask, row in rows.items():
        losses = [run["loss"] for run in row["runs"]]
        assert row["loss_mean_std"] == pytest.approx(
            [statistics.fmean(losses), statistics.stdev(losses)]
        )
        differences = [run["loss"] - dense[run["seed"]] for run in row["runs"]]
        assert row["delta_loss_vs_dense_mean_std"][0] == pytest.approx(
            statistics.fmean(differences), abs=1e-12
        ), mask
        assert row["gate_passed"] == sum(run["gate"] == 1.0 for run in row["runs"]), mask


def write_search_job(
    job, config: dict, steps: list[int], diagonal_ranks: list[int], last: dict | None = None
) -> None:
    """A search job's config.yaml and figures/importance.json (every region's keep probability
    0.5, but at the last step those `last` gives), as importance/summarize.py reads them."""
    import yaml

    module = load_summarize("importance")
    (job / "figures").mkdir(parents=True)
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    regions = {
        key: [0.5] * (len(steps) - 1) + [(last or {}).get(key, 0.5)]
        for key in module.REGIONS + module.TOKEN_REGIONS
    }
    numbers = {"steps": steps, "n": 64, "diagonal_rank": diagonal_ranks, **regions}
    (job / "figures" / "importance.json").write_text(json.dumps(numbers))


def test_the_importance_summary_counts_the_seeds_whose_diagonal_ends_least_kept(tmp_path):
    """The importance verdict's "3 of 3 seeds" and its rank are this count and mean, per
    structure, read from each job's figures/importance.json and config.yaml."""
    module = load_summarize("importance")
    sweep = tmp_path / "sweep"
    ends = {
        ("structured", 0): 1,
        ("structured", 1): 1,
        ("structured", 2): 4,
        ("unstructured", 0): 2,
    }
    for (structure, seed), last_rank in ends.items():
        config = {"seed": seed, "mask": {"structure": structure},
                  "model": {"from_run": None, "name_or_path": "embedded:minilm"}}  # fmt: skip
        write_search_job(sweep / f"{structure}-{seed}", config, [0, 10], [32, last_rank])
    summary = module.summarize([sweep])
    assert summary["structured"]["seeds_where_diagonal_is_least_kept"] == 2
    assert summary["structured"]["diagonal_rank_mean_std"][-1] == pytest.approx(
        [2.0, statistics.stdev([1, 1, 4])]
    )
    assert summary["unstructured"]["seeds_where_diagonal_is_least_kept"] == 0
    assert "final_diagonal_rank_per_head" not in summary["structured"]  # written before it


def test_the_importance_summary_counts_the_heads_whose_own_diagonal_ends_least_kept(tmp_path):
    module = load_summarize("importance")
    sweep = tmp_path / "sweep"
    per_head = {0: [[[30, 20]], [[1, 5.5]]], 1: [[[9, 9]], [[1, 40]]]}  # [T][L][H] per seed
    for seed, ranks in per_head.items():
        config = {"seed": seed, "mask": {"structure": "unstructured"},
                  "model": {"from_run": None, "name_or_path": None}}  # fmt: skip
        job = sweep / f"u-{seed}"
        write_search_job(job, config, [0, 10], [32, 2])
        numbers = json.loads((job / "figures" / "importance.json").read_text())
        numbers["diagonal_rank_per_layer_head"] = ranks
        (job / "figures" / "importance.json").write_text(json.dumps(numbers))
    summary = module.summarize([sweep])
    assert summary["unstructured"]["final_diagonal_rank_per_head"] == {
        "heads": 4, "least_kept": 2, "median": 3.25, "range": [1, 40]
    }  # fmt: skip
    assert (
        "the least kept distance of the head's own mask at the end: 2 of 4; its rank within a "
        "head 1–40, median 3.25." in module.to_markdown(summary)
    )


def test_the_importance_summary_tables_cls_and_sep_only_for_a_per_entry_mask(tmp_path):
    """The paper's "[CLS] and [SEP] stay important" is read from DAM_u's rows and columns of
    positions 0 and n − 1; under DAM_s each holds every distance once, so they are left out."""
    module = load_summarize("importance")
    sweep = tmp_path / "sweep"
    for structure in ("structured", "unstructured"):
        for seed, cls_column in ((0, 0.8), (1, 0.6)):
            config = {"seed": seed, "mask": {"structure": structure},
                      "model": {"from_run": None, "name_or_path": None}}  # fmt: skip
            write_search_job(sweep / f"{structure}-{seed}", config, [0, 10], [32, 5],
                             last={"cls_column": cls_column, "sep_row": 0.1})  # fmt: skip
    summary = module.summarize([sweep])
    final = summary["unstructured"]["final_keep_probability_mean_std"]
    assert final["cls_column"] == pytest.approx([0.7, statistics.stdev([0.8, 0.6])])
    assert final["sep_row"] == pytest.approx([0.1, 0.0])
    assert "cls_column" not in summary["structured"]["final_keep_probability_mean_std"]
    markdown = module.to_markdown(summary)
    assert markdown.count("| cls_column | 0.7000 ± 0.1414 |") == 1


def test_the_importance_summary_gives_a_jointly_trained_models_accuracy_through_the_search(
    tmp_path,
):
    """A search that trains its encoder (the paper's setting) is itself the model the verdict
    rests on: its held-out MLM accuracy at each evaluation both seeds share, mean ± std; a
    frozen-encoder search (the model is its starting checkpoint) gets no such row."""
    module = load_summarize("importance")
    sweep = tmp_path / "sweep"
    accuracies = {0: {250: 0.10, 500: 0.20, 750: 0.30}, 1: {250: 0.12, 500: 0.26}}
    for structure, encoder_lr in (("structured", None), ("unstructured", 0)):
        for seed, by_step in accuracies.items():
            job = sweep / f"{structure}-{seed}"
            config = {"seed": seed, "mask": {"structure": structure, "encoder_lr": encoder_lr},
                      "model": {"from_run": None, "name_or_path": None}}  # fmt: skip
            write_search_job(job, config, [750], [3])
            lines = [{"step": s, "train/loss": 5.0} for s in by_step]
            lines += [{"step": s, "eval/mlm_accuracy": a} for s, a in by_step.items()]
            (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = module.summarize([sweep])
    by_step = summary["structured"]["held_out_mlm_accuracy_mean_std"]
    assert list(by_step) == [250, 500]
    assert by_step[500] == pytest.approx([0.23, statistics.stdev([0.20, 0.26])])
    assert "| held-out MLM accuracy (%) | 11.0 ± 1.4 | 23.0 ± 4.2 |" in module.to_markdown(summary)
    assert "held_out_mlm_accuracy_mean_std" not in summary["unstructured"]


def test_the_committed_joint_importance_summary_is_what_its_runs_give():
    """results/joint holds each search's config, metrics and importance numbers: its summary,
    recomputed from them, must equal the committed one (a stale or hand-edited summary fails)."""
    module = load_summarize("importance")
    joint = ROOT / "experiments" / "importance" / "results" / "joint"
    summary = module.summarize([joint])
    assert json.loads(json.dumps(summary)) == json.loads((joint / "summary.json").read_text())
    assert (joint / "summary.md").read_text() == module.to_markdown(summary)
