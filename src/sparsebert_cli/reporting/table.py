"""The paper's results table (docs/paper.md §5) from run folders: one row per mask, one column per task.

Runs (read by `records`) are grouped by `row_keys` and `col_keys` (dotted config keys); seeds are
what a cell's mean ± std (sample standard deviation) is taken over. A cell pools only replicates:
completed runs of one experiment config (`RunRecord.experiment`: the config but the seed) with
distinct seeds. A cell whose runs differ in anything else (a demo sweep and a smoke sweep under
one path, `mask.window=4,8` in one `window` row) or repeat a seed is not pooled: it reads `mixed
configs` or `duplicate seeds`, and the table's warnings name the differing keys and the runs; a
row whose cells used different masks has no sparsity and no Average, and a warning. Metrics in metrics.json are
fractions; the table shows them ×100 like the paper, and the mask sparsity in percent.

Cells of a task with two headline numbers show both (MNLI m/mm, QQP and MRPC acc/F1, STS-B
Pearson/Spearman, SQuAD EM/F1). The Average is the plain mean over the table's columns with MNLI
m and mm counted as two columns (docs/paper.md §5); for QQP, MRPC, STS-B and SQuAD the mean of the pair
enters the Average, as in the GLUE benchmark's score. The paper's Avg is the mean of the one number
each of its columns prints (which of acc/F1 is open there), so the two differ by the pairs' spread.
A row missing any column has no Average.
Beside the tasks, a row shows the held-out MLM loss of the pre-trainings its results descend from
(each pre-training counted once, however many tasks were fine-tuned from it). Under paths with
no fine-tuning result, the pre-trainings are the results (a continued-pretraining study): rows
without task columns, and the same-seed difference of each row's MLM loss to the dense row.
A row of `mask=from_run` is named by the searched mask it used (its mask.json kind and target),
one of `mask=checkpoint` by the mask of the run its model came from (`window (checkpoint)`), or
by the model when it is not a run's (`checkpoint of embedded:minilm`).
"""

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsebert_cli import runs
from sparsebert_cli.data.glue import GLUE_TASKS
from sparsebert_cli.differences import differences
from sparsebert_cli.masks.config import DAM_KINDS
from sparsebert_cli.reporting.records import (
    PRETRAIN_STAGE,
    REFERENCES,
    SEED_KEY,
    RunRecord,
    collect_runs,
    lookup,
    upstream_seeds,
)
from sparsebert_cli.runs import config_hash

MASK_IDENTITY = ("mask.name", "mask.structure", "mask.lam", "mask.target_sparsity")
# The paper's names of the DAM structures: DAM_u, DAM_s, DAM_b.
DAM_VARIANTS = {structure: kind.replace("dam_", "DAM_") for structure, kind in DAM_KINDS.items()}
DEFAULT_COLS = ("task.name",)
HEADLINE = (("", runs.HEADLINE),)
# task -> (short label, metrics.json key) of the numbers its cell shows, in the paper's order.
TASK_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "mnli": (("m", "eval/accuracy"), ("mm", "eval/mismatched/accuracy")),
    "qqp": (("acc", "eval/accuracy"), ("F1", "eval/f1")),
    "qnli": (("acc", "eval/accuracy"),),
    "sst2": (("acc", "eval/accuracy"),),
    "cola": (("MCC", "eval/mcc"),),
    "stsb": (("P", "eval/pearson"), ("S", "eval/spearman")),
    "mrpc": (("acc", "eval/accuracy"), ("F1", "eval/f1")),
    "rte": (("acc", "eval/accuracy"),),
    "wnli": (("acc", "eval/accuracy"),),
    "squad": (("EM", "eval/exact"), ("F1", "eval/f1")),
    "squad_v2": (("EM", "eval/exact"), ("F1", "eval/f1")),
    "swag": (("acc", "eval/accuracy"),),
}
# Column labels: a GLUE task's folder name (SST-2, STS-B, …), then the other tasks'.
TASK_LABELS = {
    **{task: layout.folder for task, layout in GLUE_TASKS.items()},
    "squad": "SQuAD v1.1",
    "squad_v2": "SQuAD v2.0",
    "swag": "SWAG",
}
# Default rows in the paper's order: dense and no_diag, the fixed patterns by sparsity at n = 128,
# then DAM_u and DAM_s by λ; masks not listed follow by name.
ROW_ORDER = (
    "dense", "no_diag", "strided", "fixed", "longformer", "logsparse", "bigbird", "star",
    "window", "random", "dam", "from_run", "checkpoint",
)  # fmt: skip
SPLIT_IN_AVERAGE = ("mnli",)  # each of its numbers counts as a column of its own


@dataclass
class Stat:
    mean: float | None
    std: float | None  # sample std over seeds; None with fewer than two values
    n: int


@dataclass
class Cell:
    # ok | partial (some runs failed, interrupted or running) | failed | interrupted | running |
    # missing | mixed (not pooled)
    status: str
    values: dict[str, Stat]  # metric label -> mean ± std over the completed runs
    seeds: list[Any]
    completed: int
    failed: int
    running: int
    errors: list[str]
    runs: list[str]
    problem: str | None = None  # why a mixed cell is not pooled: the warning's text
    interrupted: int = 0  # stopped runs (a rerun resumes them)

    def unfinished(self) -> list[tuple[str, int]]:
        """(status, count) of the runs that did not complete, in runs.UNFINISHED order (the first
        names a cell of no completed run), counts > 0; any other status counts as running."""
        return [
            (status, getattr(self, status)) for status in runs.UNFINISHED if getattr(self, status)
        ]


@dataclass
class Column:
    key: dict[str, Any]
    label: str
    task: str | None
    metrics: list[tuple[str, str]]  # (label, metrics.json key)


@dataclass
class Row:
    key: dict[str, Any]
    label: str
    sparsity: float | None
    mlm_loss: Stat  # held-out MLM loss of the row's distinct pre-trainings (not ×100)
    mlm_accuracy: Stat  # their held-out MLM accuracy (a fraction)
    gate: tuple[int, int]  # of those that measured the "uses attention" gate: (passed, measured)
    # pre-training results: MLM loss minus the dense row's, paired by seed (n: the pairs)
    mlm_delta: Stat
    cells: list[Cell]
    average: float | None
    # the row's pretrain-stage runs (pre-training results, the MLM columns), None if none
    pretraining: Cell | None = None

    def all_cells(self) -> list[Cell]:
        """The task cells and the pre-training cell, if any."""
        return [*self.cells, *([self.pretraining] if self.pretraining else [])]


@dataclass
class Table:
    row_keys: list[str]
    col_keys: list[str]
    columns: list[Column]
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)


def _row_key(record: RunRecord, row_keys: list[str] | None) -> tuple[tuple[str, Any], ...]:
    if row_keys is not None:
        return tuple((key, lookup(record, key)) for key in row_keys)
    name = lookup(record, "mask.name")
    if name == "checkpoint" and record.model_run is not None:  # named by the model's mask
        inner = dict(_row_key(record.model_run, None))
        return (("mask.name", name), ("mask.of_model", row_label(inner, True)))
    if name == "checkpoint" and not lookup(record, "model.from_run"):  # model=minilm, model=hf
        return (("mask.name", name), ("model.name_or_path", lookup(record, "model.name_or_path")))
    if name == "from_run" and record.searched is not None:
        kind, target, lam = record.searched
        return (
            ("mask.name", name),
            ("mask.kind", kind),
            ("mask.target_sparsity", target),
            ("mask.lam", lam),
        )
    keys = MASK_IDENTITY if name == "dam" else MASK_IDENTITY[:1]
    return tuple((key, lookup(record, key)) for key in keys)


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def row_label(key: dict[str, Any], default_keys: bool) -> str:
    """`DAM_s λ=0.001` (`DAM_b t=0.9` when searched to a target sparsity) for a default (mask
    identity) row, `k=v, k=v` otherwise; a searched mask used through mask=from_run by its
    mask.json kind (`dam_s λ=0.001`, `attention_topk t=0.8`); a fine-tune of a model with the
    mask it was pre-trained with by that mask (`window (checkpoint)`), of another model by the
    model (`checkpoint of embedded:minilm`)."""
    if default_keys and "mask.of_model" in key:
        return f"{key['mask.of_model']} (checkpoint)"
    if default_keys and key.get("model.name_or_path"):
        return f"checkpoint of {key['model.name_or_path']}"
    if default_keys and "mask.kind" in key:
        target, lam = key.get("mask.target_sparsity"), key.get("mask.lam")
        if target is not None:
            return f"{key['mask.kind']} t={target / 100:g}"
        return key["mask.kind"] + ("" if lam is None else f" λ={_format_value(lam)}")
    if default_keys and key.get("mask.name") == "dam":
        variant = DAM_VARIANTS.get(key.get("mask.structure"), DAM_VARIANTS["unstructured"])
        if key.get("mask.target_sparsity") is not None:
            return f"{variant} t={_format_value(key['mask.target_sparsity'])}"
        return f"{variant} λ={_format_value(key.get('mask.lam'))}"
    if default_keys:
        return str(key.get("mask.name"))
    return ", ".join(f"{k}={_format_value(v)}" for k, v in key.items())


def _sort_key(key: tuple[tuple[str, Any], ...]) -> tuple:
    return tuple(
        (0, value, "") if isinstance(value, int | float) else (1, 0, str(value)) for _, value in key
    )


def row_order(key: tuple[tuple[str, Any], ...]) -> tuple:
    """The sort key of a default (mask identity) row: ROW_ORDER, DAM_u, DAM_s, DAM_b, then λ."""
    values = dict(key)
    name = values.get("mask.name")
    structure = values.get("mask.structure")
    return (
        ROW_ORDER.index(name) if name in ROW_ORDER else len(ROW_ORDER),
        list(DAM_VARIANTS).index(structure) if structure in DAM_VARIANTS else len(DAM_VARIANTS),
        _sort_key(tuple((k, v) for k, v in key if v is not None)),
    )


def _column_order(key: tuple[tuple[str, Any], ...]) -> tuple:
    value = key[0][1] if len(key) == 1 else None
    if key and key[0][0] == "task.name" and value in TASK_METRICS:
        return (0, list(TASK_METRICS).index(value), ())
    return (1, 0, _sort_key(key))


def _stat(values: list[float]) -> Stat:
    if not values:
        return Stat(mean=None, std=None, n=0)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(mean=statistics.fmean(values), std=std, n=len(values))


def _mask_of(experiment: dict) -> dict:
    """The mask an experiment ran with: its mask section, or for mask=checkpoint the mask of the
    model it started from (its experiment stands in `model.from_run`)."""
    mask = experiment.get("mask") or {}
    upstream = (experiment.get("model") or {}).get("from_run")
    if mask.get("name") == "checkpoint" and isinstance(upstream, dict):
        return _mask_of(upstream)
    return mask


def _masks(records: list[RunRecord]) -> dict[str, dict]:
    """The distinct masks (`_mask_of`) the `records` ran with, by hash."""
    sections = ({"mask": _mask_of(r.experiment)} for r in records)
    return {config_hash(section): section for section in sections}


def _seeds_label(replicate: tuple) -> str:
    """`0`, `0 (fold 2)`, `0 (upstream runs: 1, 1)` for a run's `RunRecord.replicate`."""
    own, fold, *upstream = replicate
    label = str(own) + ("" if fold in (None, 0) else f" (fold {fold})")
    return label + (f" (upstream runs: {', '.join(map(str, upstream))})" if upstream else "")


def _outside_mask(key: tuple) -> tuple:
    return tuple((k, v) for k, v in key if not k.startswith("mask."))


def _dense_peers(context: tuple, pretrain_rows: dict[tuple, list[RunRecord]]) -> list[RunRecord]:
    """The dense pre-training runs the MLM loss of the rows with the keys `context` outside the
    mask is paired with: mask.name=dense and those keys alike (`--rows mask.name,seed`)."""
    return [
        record
        for key, records in pretrain_rows.items()
        if dict(key).get("mask.name") == "dense" and _outside_mask(key) == context
        for record in records
    ]


def replicate_problem(done: list[RunRecord]) -> str | None:
    """Why the completed runs of a cell are not replicates of one experiment, or None."""
    groups: dict[str, list[RunRecord]] = {}
    for record in done:
        groups.setdefault(config_hash(record.experiment), []).append(record)
    folders = ", ".join(str(r.dir) for r in done)
    if len(groups) > 1:
        differing = differences([members[0].experiment for members in groups.values()])
        shown = "; ".join(differing[:5]) + ("; ..." if len(differing) > 5 else "")
        # a difference inside an upstream run splits by that run's reference (its folder)
        upstream = sorted(
            {f"{group}.{key}" for group, key in REFERENCES for d in differing
             if d.startswith(f"{group}.{key}.")}
        )  # fmt: skip
        split = f"add {' and '.join(upstream)} to --rows" if upstream else (
            "add the differing key to --rows or --cols"
        )  # fmt: skip
        return (
            f"mixed configs: {len(done)} runs of {len(groups)} different configs ({shown}) are "
            f"not pooled. Report one sweep at a time, or {split}. Runs: {folders}"
        )
    replicates = [r.replicate for r in done]
    repeated = sorted({_seeds_label(s) for s in replicates if replicates.count(s) > 1})
    if repeated:
        return (
            f"duplicate seeds: seed {', '.join(repeated)} appears in more than one run of the "
            f"same config, so its {len(done)} runs are {len(set(replicates))} replicate(s), not "
            f"{len(done)}; not pooled. Delete the "
            f"extra run folders or report one of them. Runs: {folders}"
        )
    return None


def _unfinished_elsewhere(done: list[RunRecord], unfinished: list[RunRecord]) -> str | None:
    """Why unfinished runs whose recorded config differs from the completed runs' do not belong
    in their cell (a rerun would not complete them here), or None."""
    if not done:
        return None
    ours = {config_hash(r.experiment) for r in done}
    others = [r for r in unfinished if r.config and config_hash(r.experiment) not in ours]
    if not others:
        return None
    shown = "; ".join(differences([done[0].experiment, others[0].experiment])[:5])
    return (
        f"mixed configs: {len(others)} unfinished run(s) of another config than its "
        f"{len(done)} completed one(s) ({shown}). Report one sweep at a time, add the differing "
        f"key to --rows or --cols, or delete them. Runs: {', '.join(str(r.dir) for r in others)}"
    )


def _cell(records: list[RunRecord], metrics: list[tuple[str, str]]) -> Cell:
    done = [r for r in records if r.status == "completed"]
    unfinished: dict[str, list[RunRecord]] = {status: [] for status in runs.UNFINISHED}
    for r in records:
        if r.status != "completed":
            unfinished[r.status if r.status in unfinished else "running"].append(r)
    failed = unfinished["failed"]
    problem = replicate_problem(done) or _unfinished_elsewhere(
        done, [r for runs in unfinished.values() for r in runs]
    )
    pooled = [] if problem else done
    values = {
        label: _stat(
            [100.0 * r.metrics[key] for r in pooled if isinstance(r.metrics.get(key), int | float)]
        )
        for label, key in metrics
    }
    if problem:
        status = "mixed"
    elif done:
        status = "partial" if any(unfinished.values()) else "ok"
    else:
        status = next((name for name, runs in unfinished.items() if runs), "missing")
    return Cell(
        status=status,
        values=values,
        seeds=sorted((lookup(r, SEED_KEY) for r in done), key=str),
        completed=len(done),
        failed=len(failed),
        running=len(unfinished["running"]),
        errors=[f"{r.dir}: {(r.error or 'failed').splitlines()[0]}" for r in failed],
        runs=[str(r.dir) for r in records],
        problem=problem,
        interrupted=len(unfinished["interrupted"]),
    )


def _average_terms(column: Column, cell: Cell) -> list[float] | None:
    means = [cell.values[label].mean for label, _ in column.metrics]
    if any(m is None for m in means):
        return None
    if column.task in SPLIT_IN_AVERAGE:
        return means
    return [statistics.fmean(means)]


def _pretrainings(records: list[RunRecord]) -> list[dict[str, float]]:
    """The metrics of the distinct pre-trainings the completed `records` descend from."""
    return list(
        dict(r.pretrain for r in records if r.status == "completed" and r.pretrain).values()
    )


def _sparsity_at_one_n(
    measured: list[tuple[float, int | None]],
) -> tuple[list[float], str | None]:
    """The sparsities (%) of a row's runs measured at one n, and what the others measured: a
    pattern's sparsity changes with n (GLUE at 128, SQuAD at 384). The n most runs used is shown,
    the smallest of a tie; a run that did not record its n (older runs) counts only while no two
    recorded n differ."""
    by_n: dict[int, list[float]] = {}
    for value, n in measured:
        if n is not None:
            by_n.setdefault(n, []).append(value)
    if len(by_n) < 2:
        return [value for value, _ in measured], None
    shown = min(by_n, key=lambda n: (-len(by_n[n]), n))
    others = "; ".join(
        f"{statistics.fmean(values):.1f} % at n = {n} ({len(values)} run(s))"
        for n, values in sorted(by_n.items())
        if n != shown
    )
    note = f"sparsity shown at n = {shown}, where most of its runs measured it; {others}"
    return by_n[shown], note


def _pairing(record: RunRecord) -> tuple[str, Any, tuple]:
    """What a pre-training is paired with the dense one by: its experiment outside the mask (the
    same data, model and training), its own seed and the seeds of the runs its weights come from
    (continuations of two replicate checkpoints are two pairs; a searched mask's seed is the
    mask's, not the pair's)."""
    outside = {k: v for k, v in record.experiment.items() if k != "mask"}
    weights = upstream_seeds({"model": record.config.get("model")})
    return config_hash(outside), lookup(record, SEED_KEY), weights


def _losses(records: list[RunRecord]) -> list[tuple[tuple[str, Any], float]]:
    """(pairing, MLM loss) of the completed pre-trainings among `records`."""
    return [
        (_pairing(r), r.pretrain[1]["loss"])
        for r in records
        if r.status == "completed" and r.pretrain and "loss" in r.pretrain[1]
    ]


def _paired_delta(records: list[RunRecord], dense: dict[tuple, float]) -> tuple[Stat, int]:
    """MLM loss minus the dense row's (`dense`: its losses by pairing) over a row's pre-training
    results, each paired with the dense run of its config and seed; and how many found none."""
    own = _losses(records)
    deltas = [loss - dense[key] for key, loss in own if key in dense]
    return _stat(deltas), len(own) - len(deltas)


def _gate(pretrainings: list[dict[str, float]]) -> tuple[int, int]:
    measured = [p["gate"] for p in pretrainings if "gate" in p]
    return sum(v >= 1.0 for v in measured), len(measured)


def build_table(
    paths: list[Path], rows: list[str] | None = None, cols: list[str] | None = None
) -> Table:
    """Read the runs under `paths` into the paper-shaped table.

    rows: config keys of a row (None: the mask identity, i.e. mask.name, plus mask.structure,
    mask.lam and mask.target_sparsity for dam); cols: config keys of a column (None: task.name).
    """
    records, warnings = collect_runs([Path(p) for p in paths])
    col_keys = list(cols or DEFAULT_COLS)
    grouped: dict[tuple, dict[tuple, list[RunRecord]]] = {}
    col_ids: set[tuple] = set()
    pretrain_rows: dict[tuple, list[RunRecord]] = {}  # pre-training results: rows, no column
    for record in records:
        row_id = _row_key(record, rows)
        if record.stage == PRETRAIN_STAGE:
            grouped.setdefault(row_id, {})
            pretrain_rows.setdefault(row_id, []).append(record)
            continue
        col_id = tuple((key, lookup(record, key)) for key in col_keys)
        col_ids.add(col_id)
        grouped.setdefault(row_id, {}).setdefault(col_id, []).append(record)

    columns = []
    ordered_cols = sorted(col_ids, key=_column_order)
    for col_id in ordered_cols:
        members = [r for cells in grouped.values() for r in cells.get(col_id, [])]
        tasks = {lookup(r, "task.name") for r in members}
        task = tasks.pop() if len(tasks) == 1 else None
        metrics = list(TASK_METRICS.get(task, HEADLINE))
        if col_keys == list(DEFAULT_COLS):
            label = TASK_LABELS.get(task, str(task))
        else:
            label = ", ".join(f"{k}={_format_value(v)}" for k, v in col_id)
        columns.append(Column(key=dict(col_id), label=label, task=task, metrics=metrics))

    table_rows = []
    dense_losses: dict[tuple, dict] = {}  # by the row keys outside the mask, then by pairing
    for row_id in sorted(grouped, key=row_order if rows is None else _sort_key):
        by_col = grouped[row_id]
        cells = [
            _cell(by_col.get(c, []), col.metrics)
            for c, col in zip(ordered_cols, columns, strict=True)
        ]
        terms = [_average_terms(col, cell) for col, cell in zip(columns, cells, strict=True)]
        average = (
            None
            if not terms or any(t is None for t in terms)
            else statistics.fmean(x for t in terms for x in t)
        )
        members = [r for cell in by_col.values() for r in cell] + pretrain_rows.get(row_id, [])
        key = dict(row_id)
        label = row_label(key, rows is None)
        partial = [
            col.label for col, cell in zip(columns, cells, strict=True) if cell.status == "partial"
        ]
        # the seeds (own and upstream runs') of each column's completed runs; folds aside
        seed_sets = {
            tuple(sorted({r.seeds for r in by_col.get(c, []) if r.status == "completed"}, key=str))
            for c in ordered_cols
        }
        if average is not None and partial:  # the columns' seed sets differ, and still move
            average = None
            warnings.append(
                f"{label}: no Average while {', '.join(partial)} lack runs that failed or have "
                "not finished (an Average over the rest would mix seed sets); rerun the sweep."
            )
        elif average is not None and len(seed_sets) > 1:
            average = None
            shown = " vs ".join(
                "{" + ", ".join(_seeds_label((s[0], None, *s[1:])) for s in seeds) + "}"
                for seeds in sorted(seed_sets, key=len)
            )
            warnings.append(
                f"{label}: no Average: its columns were run with different seeds ({shown}), and "
                "an Average over them would mix seed sets; run every task with the same seeds."
            )
        warnings += [
            f"{label} × {column.label}: {cell.problem}"
            for column, cell in zip(columns, cells, strict=True)
            if cell.problem
        ]
        # The pre-training columns pool no more than the cells do: not across configs or seeds.
        pretraining = _cell(pretrain_rows[row_id], []) if row_id in pretrain_rows else None
        own = pretraining.problem if pretraining else None
        if own:
            warnings.append(f"{label} × MLM loss: {own}")
        mixed = own or any(cell.problem for cell in cells)
        # a mean over runs of different masks is no mask's sparsity: shown for one mask only
        found, other_n = _sparsity_at_one_n([r.sparsity for r in members if r.sparsity])
        if other_n:
            warnings.append(f"{label}: {other_n}")
        results = _masks([r for cell in by_col.values() for r in cell if r.status == "completed"])
        if len(results) > 1 or (mixed and len(_masks(members)) > 1):
            found = []
        if not mixed and len(results) > 1:  # each cell one mask, but not the same one
            average = None
            warnings.append(
                f"{label}: its columns were run with different masks ("
                f"{'; '.join(differences(list(results.values()))[:5])}), so the row shows no "
                "sparsity, no Average and no MLM results. Report one mask per row: add the "
                "differing key to --rows (for fine-tunes of a model's own mask, report their "
                "pre-trainings one at a time)."
            )
        mixed = mixed or len(results) > 1
        found_pretrainings = _pretrainings(members)
        pretrainings = [] if mixed else found_pretrainings
        if not own and any(cell.problem for cell in cells) and found_pretrainings:
            warnings.append(
                f"{label}: no MLM loss, accuracy or gate either: the pre-trainings of a row whose "
                "runs are not pooled are not pooled; one config per cell shows them."
            )
        # the dense peer's MLM losses by seed: nothing to pair with when its runs are mixed
        context = _outside_mask(row_id)
        if context not in dense_losses:
            peers = _dense_peers(context, pretrain_rows)
            dense_losses[context] = {} if _cell(peers, []).problem else dict(_losses(peers))
        delta, unpaired = _paired_delta(pretrain_rows.get(row_id, []), dense_losses[context])
        if mixed:
            delta, unpaired = _stat([]), 0
        if unpaired and dense_losses[context]:
            warnings.append(
                f"{label}: {unpaired} pre-training(s) have no dense run of the same config outside "
                "the mask and the same seed, so they have no 'MLM loss − dense'; pre-train the "
                "dense model with the same data, model and training settings and seeds."
            )
        table_rows.append(
            Row(
                key=key,
                label=label,
                sparsity=statistics.fmean(found) if found else None,
                mlm_loss=_stat([p["loss"] for p in pretrainings if "loss" in p]),
                mlm_accuracy=_stat([p["accuracy"] for p in pretrainings if "accuracy" in p]),
                gate=_gate(pretrainings),
                mlm_delta=delta,
                cells=cells,
                average=average,
                pretraining=pretraining,
            )
        )
    row_keys = list(rows) if rows is not None else list(MASK_IDENTITY)
    return Table(
        row_keys=row_keys, col_keys=col_keys, columns=columns, rows=table_rows, warnings=warnings
    )
