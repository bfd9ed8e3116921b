"""Reading run folders for the results table: which runs count, and what the table needs of each.

Only pipeline, finetune and evaluate runs carry results; a run consumed by another reported run
(a pipeline's evaluate step, an evaluate run's finetune run) is left out, so no result counts twice.
A config key's value comes from the run's resolved `config.yaml` (written by every job that took
its folder, a failed one too), else its `.hydra/overrides.yaml` (group choices such as
`mask=dam_s`).
A standalone evaluate run takes these from the finetune run it evaluated: its own config holds
only the keys evaluate reads, while the task (and mask and seed) it evaluated are the finetune
run's.
Paths read from manifests are followed only inside the runs folder the run lives in; through
them a result run also finds the pre-training it descends from, whose held-out MLM metrics the
table shows beside the task scores.
"""

import glob
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sparsebert_cli import runs
from sparsebert_cli.data.config import task_identity
from sparsebert_cli.errors import SparseBertError, first_line, require
from sparsebert_cli.masks.config import META_FILE
from sparsebert_cli.user_paths import path_is, user_path

RESULT_STAGES = ("pipeline", "finetune", "evaluate")
# Under paths with no result run, the pre-trainings are the results: a continued-pretraining
# study's table is its held-out MLM numbers (no task columns).
PRETRAIN_STAGE = "pretrain"
# Beside what a run's content hash leaves out (where and how it was launched), these do not make
# two result runs different experiments: the seed (what replicates differ by) and the stage that
# produced the result. A reference to an upstream run folder stands for that run's own experiment
# config (followed up to UPSTREAM_DEPTH runs back): runs built on replicates of one upstream
# experiment pool, runs built on different ones do not.
SEED_KEY = "seed"
# An embedded task's cross-validation fold: its folds are replicates too (conf/task/polarity.yaml:
# report the mean over task.fold=0..4), told apart like seeds.
FOLD_KEY = "task.fold"
_NOT_COMPARED = (SEED_KEY, "stage")
REFERENCES = (("model", "from_run"), ("mask", "from_run"))
UPSTREAM_DEPTH = 4  # search → pretrain → finetune → evaluate is three references deep
# The pre-training numbers the table shows beside the tasks: held-out MLM loss and accuracy, and
# the "uses attention" gate (attention/profile.py; 1.0 passed, absent in runs older than the gate)
PRETRAIN_METRICS = {"loss": runs.MLM_LOSS, "accuracy": runs.MLM_ACCURACY,
                    "gate": runs.USES_ATTENTION}  # fmt: skip


@dataclass
class RunRecord:
    """What the table needs from one run folder."""

    dir: Path
    status: str
    config: dict
    overrides: dict[str, str]
    metrics: dict[str, float]
    error: str | None
    # the mask's sparsity (%) and the n it was measured at (None: dense, or a run older than it)
    sparsity: tuple[float, int | None] | None
    # the upstream pre-training run (the run itself for a pretrain result) and its
    # PRETRAIN_METRICS (by their short names)
    pretrain: tuple[str, dict[str, float]] | None = None
    stage: str = "pipeline"
    # a searched mask used through mask=from_run: its mask.json kind, target sparsity (%) and,
    # searched without a target, its λ
    searched: tuple[str, float | None, float | None] | None = None
    # mask=checkpoint: the run whose model (and so whose mask) it started from, if readable
    model_run: "RunRecord | None" = None

    @cached_property
    def experiment(self) -> dict:
        """The config a replicate shares with this run: all that determines its result but the
        seed and fold (see `experiment_config`)."""
        return experiment_config(self.config)

    @cached_property
    def seeds(self) -> tuple:
        """Its seed and its upstream runs' seeds: its replicate without the task fold."""
        return (lookup(self, SEED_KEY), *upstream_seeds(self.config))

    @cached_property
    def replicate(self) -> tuple:
        """What tells this run's replicates apart: its seed, its task fold and its upstream
        runs' seeds (two pre-trainings with seed 0 of masks searched with seeds 0 and 1 are two
        replicates)."""
        own, *upstream = self.seeds
        return (own, lookup(self, FOLD_KEY), *upstream)


def _upstream_configs(config: dict) -> dict[tuple[str, str], dict]:
    """The readable configs of the upstream runs `config` references (model.from_run, and
    mask.from_run of a mask=from_run), by reference, in REFERENCES order."""
    found = {}
    for group, key in REFERENCES:
        section = config.get(group)
        folder = section.get(key) if isinstance(section, dict) else None
        if folder and (group != "mask" or section.get("name") == "from_run"):
            upstream, _ = _load_settings(Path(str(folder)))
            if upstream:
                found[group, key] = upstream
    return found


def upstream_seeds(config: dict, depth: int = UPSTREAM_DEPTH) -> tuple:
    """The seeds of the upstream runs `config` references and of theirs (depth first)."""
    seeds: tuple = ()
    if depth:
        for upstream in _upstream_configs(config).values():
            seeds += (canonical(upstream.get(SEED_KEY)), *upstream_seeds(upstream, depth - 1))
    return seeds


def _compared(key: str) -> bool:
    """Whether two runs differing in `key` are different experiments: not for a replicate's
    seed or fold, nor for where or how fast a run ran (the keys a content hash leaves out)."""
    from sparsebert_cli.stages import NOT_HASHED, NOT_HASHED_TRAINER

    group, _, name = key.partition(".")
    if key in (SEED_KEY, FOLD_KEY) or group in (*NOT_HASHED, *_NOT_COMPARED):
        return False
    return not (group == "trainer" and name in NOT_HASHED_TRAINER)


def experiment_config(config: dict, depth: int = UPSTREAM_DEPTH) -> dict:
    """`config` without the keys that do not make two result runs different experiments: the
    launch settings a run's content hash leaves out (`stages.hashed_config`), the seed and task
    fold, the stage, and the mask settings the chosen mask does not read (`mask_identity`);
    a pipeline's per-step overrides stay. An upstream run folder is replaced by that run's experiment config
    (`depth` runs back; an unreadable one, e.g. of a moved runs folder, is left out)."""
    from sparsebert_cli.masks.config import mask_identity
    from sparsebert_cli.stages import INHERITED, NOT_HASHED, NOT_HASHED_TRAINER, pipeline_identity

    kept = {k: v for k, v in config.items() if k not in (*NOT_HASHED, *_NOT_COMPARED)}
    group, key = FOLD_KEY.split(".")
    if isinstance(kept.get(group), dict):
        kept[group] = {k: v for k, v in kept[group].items() if k != key}
    pipeline = pipeline_identity(config)
    if INHERITED in pipeline:  # the keys typed on the command line, less those not compared
        typed = [key for key in pipeline[INHERITED] if _compared(key)]
        pipeline = {k: v for k, v in pipeline.items() if k != INHERITED}
        pipeline.update({INHERITED: typed} if typed else {})
    if pipeline:
        kept["pipeline"] = pipeline
    if isinstance(kept.get("trainer"), dict):
        kept["trainer"] = {k: v for k, v in kept["trainer"].items() if k not in NOT_HASHED_TRAINER}
    upstream = _upstream_configs(config) if depth else {}
    for group, key in REFERENCES:
        section = kept.get(group)
        if isinstance(section, dict):
            kept[group] = {k: v for k, v in section.items() if k != key}
            if (group, key) in upstream:
                kept[group][key] = experiment_config(upstream[group, key], depth - 1)
    model = kept.get("model")
    if isinstance(model, dict) and (config.get("model") or {}).get("from_run"):
        # weights from an upstream run: the model preset's checkpoint name is not read (a
        # hand-run finetune keeps finetune's default embedded:minilm, a pipeline step null)
        kept["model"] = {k: v for k, v in model.items() if k != "name_or_path"}
    mask = kept.get("mask")
    if isinstance(mask, dict) and "name" in mask:  # as the content hash: what the mask reads
        kept["mask"] = mask_identity(mask)
    if isinstance(kept.get("task"), dict):
        kept["task"] = task_identity(kept["task"])
    return kept


def canonical(value: Any) -> Any:
    """One value per meaning: "1e-3", "0.001" and 0.001 all become 0.001; "2" becomes 2."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
    return value


def lookup(record: RunRecord, key: str) -> Any:
    """The value of a dotted key: from the resolved config, else from the job's overrides."""
    node: Any = record.config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None or isinstance(node, dict | list):
        node = record.overrides.get(key)
    return canonical(node)


def _read_yaml(path: Path) -> Any:
    """A run's YAML file (its config or overrides); a SparseBertError when it is not YAML."""
    from omegaconf import OmegaConf

    require(path.is_file(), f"{path} is missing; rerun its stage")
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as error:  # yaml's scanner/parser errors, OmegaConf's, an unreadable file
        raise SparseBertError(
            f"{path} is damaged ({first_line(error, type(error).__name__)}); rerun its stage"
        ) from None


def _located(config: dict, run_dir: Path) -> dict:
    """`config` of the run in `run_dir` with the upstream folders it references (REFERENCES)
    found where they are now (`runs.relocated`: its runs folder may have moved)."""
    root = runs_root(run_dir, str(config.get("stage")))
    for group, key in REFERENCES:
        section = config.get(group)
        if isinstance(section, dict) and isinstance(section.get(key), str) and section[key]:
            section[key] = str(runs.relocated(section[key], root))
    return config


def _run_settings(run_dir: Path) -> tuple[dict, dict[str, str]]:
    """The run's config.yaml (its references found where they are now) and its overrides by key
    (.hydra/overrides.yaml, {} without one); a SparseBertError when either is missing or
    damaged."""
    config = _read_yaml(run_dir / runs.CONFIG)
    require(isinstance(config, dict), f"{run_dir / runs.CONFIG} holds no settings")
    path = runs.layout(run_dir).overrides
    items = _read_yaml(path) if path.is_file() else []
    overrides = {}
    for item in items if isinstance(items, list) else []:
        key, sep, value = str(item).partition("=")
        if sep:
            overrides[key.lstrip("+~")] = value
    return _located(config, run_dir), overrides


def _load_settings(run_dir: Path) -> tuple[dict, dict[str, str]]:
    """`_run_settings` of an upstream run read for its details: ({}, {}) when unreadable."""
    try:
        return _run_settings(run_dir)
    except SparseBertError:
        return {}, {}


def runs_root(run_dir: Path, stage: str) -> Path:
    """The runs folder a run lives in (`<runs_dir>/<stage>/...`), or the run itself if unclear."""
    for parent in run_dir.parents:
        if parent.name == stage:
            return parent.parent
    return run_dir


def _whole(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and float(value).is_integer() else None


def _mask_json_sparsity(path: Path) -> tuple[float, int | None] | None:
    try:  # missing or unreadable: no sparsity to show
        meta = runs.read_json(path)
    except SparseBertError:
        return None
    value = meta.get("sparsity")
    if isinstance(value, dict):
        value = value.get("overall")
    return (float(value), _whole(meta.get("n"))) if isinstance(value, int | float) else None


def _input_dirs(
    run_dir: Path, manifest: dict, root: Path, warnings: list[str] | None = None
) -> list[Path]:
    """The input run folders a manifest names inside `root`; the others are noted in `warnings`."""
    found = []
    for name, upstream in manifest["inputs"].items():
        path = runs.relocated(str((upstream or {}).get("run_dir", "")), root)
        if path.is_absolute() and runs.inside(path, root):
            found.append(path)
        elif warnings is not None:
            warnings.append(
                f"{run_dir}: ignored input '{name}' at {path}, which lies outside the runs folder "
                f"{root}."
            )
    return found


def _sparsity(run_dir: Path, metrics: dict, inputs: list[Path]) -> tuple[float, int | None] | None:
    """(`mask/sparsity`, `mask/seq_len`) from metrics.json, else from the mask.json of the run or
    of its inputs."""
    if isinstance(metrics.get(runs.MASK_SPARSITY), int | float):
        return float(metrics[runs.MASK_SPARSITY]), _whole(metrics.get(runs.MASK_SEQ_LEN))
    for candidate in (run_dir, *inputs):
        for folder in (runs.layout(candidate).artifacts, runs.layout(candidate).model):
            found = _mask_json_sparsity(folder / META_FILE)
            if found is not None:
                return found
    return None


def _upstream(run_dir: Path, manifest: dict, root: Path) -> list[tuple[Path, dict]]:
    """The input runs of a manifest that lie inside `root` and have a readable manifest."""
    inputs = _input_dirs(run_dir, manifest, root)
    return [(path, upstream) for path in inputs if (upstream := runs.readable_manifest(path))]


def _grouping_dir(run_dir: Path, manifest: dict, root: Path) -> Path:
    """The folder whose config places this run in the table (see the module docstring)."""
    if manifest.get("stage") == "evaluate":
        for path, upstream in _upstream(run_dir, manifest, root):
            if upstream.get("stage") == "finetune":
                return path
    return run_dir


def _pretrain(run_dir: Path, manifest: dict, root: Path) -> tuple[str, dict[str, float]] | None:
    """The completed pre-training run a result descends from (through its inputs) and those of
    its PRETRAIN_METRICS it recorded."""
    queue, seen = [(run_dir, manifest)], set()
    while queue:
        for path, upstream in _upstream(*queue.pop(), root):
            if path in seen:
                continue
            seen.add(path)
            if upstream.get("stage") != "pretrain":
                queue.append((path, upstream))
            elif upstream.get("status") == "completed":
                return _pretrain_metrics(path)
    return None


def _pretrain_metrics(path: Path) -> tuple[str, dict[str, float]] | None:
    """A completed pre-training's PRETRAIN_METRICS by their short names (None: none recorded)."""
    try:
        metrics = runs.read_metrics(path)
    except SparseBertError:
        return None
    found = {
        name: float(metrics[key])
        for name, key in PRETRAIN_METRICS.items()
        if isinstance(metrics.get(key), int | float)
    }
    return (str(path), found) if found else None


def _searched(config: dict) -> tuple[str, float | None, float | None] | None:
    """(kind, target sparsity %, λ) of the searched mask a mask=from_run config uses, if readable
    (λ None when the search had a target: it steered to that, not by λ)."""
    mask = config.get("mask")
    if not isinstance(mask, dict) or mask.get("name") != "from_run" or not mask.get("from_run"):
        return None
    try:
        meta = runs.read_json(runs.layout(str(mask["from_run"])).artifacts / META_FILE)
    except (SparseBertError, OSError):
        return None
    target = meta.get("target_sparsity")
    kind = meta.get("kind")
    if not isinstance(kind, str):
        return None
    if isinstance(target, int | float):
        return kind, float(target), None
    params = meta.get("params")
    lam = params.get("lam") if isinstance(params, dict) else None
    return kind, None, float(lam) if isinstance(lam, int | float) else None


def _model_run(config: dict) -> RunRecord | None:
    """The run a mask=checkpoint result took its model (and mask) from, read as far as its row
    needs it: its config, overrides and searched mask."""
    mask, model = config.get("mask"), config.get("model")
    folder = model.get("from_run") if isinstance(model, dict) else None
    if not isinstance(mask, dict) or mask.get("name") != "checkpoint" or not folder:
        return None
    upstream, overrides = _load_settings(Path(str(folder)))
    if not upstream:
        return None
    return RunRecord(
        dir=Path(str(folder)),
        status="completed",
        config=upstream,
        overrides=overrides,
        metrics={},
        error=None,
        sparsity=None,
        searched=_searched(upstream),
    )


def _expand(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        matches = sorted(glob.glob(str(path))) if glob.has_magic(str(path)) else [str(path)]
        # path_is: a name the system refuses (too long, …) does not exist either
        existing = [user_path(m) for m in matches if path_is(Path.exists, m)]
        if not existing:
            raise SparseBertError(
                f"{path} does not exist; pass a sweep folder such as "
                "runs/pipeline/multirun/<sweep_name>, a run folder, or a glob of them."
            )
        found.extend(existing)
    return found


def collect_runs(paths: list[Path]) -> tuple[list[RunRecord], list[str]]:
    """The result runs under `paths` (folders or globs) and the warnings met while reading them."""
    warnings: list[str] = []
    manifests: dict[Path, dict] = {}
    pretrainings: dict[Path, dict] = {}
    searches: list[Path] = []
    for path in _expand(paths):
        for run_dir, manifest in runs.iter_runs(path):
            if manifest.get("status") == runs.DAMAGED:
                warnings.append(f"{run_dir} skipped: {manifest.get('error')}")
            if manifest.get("stage") in RESULT_STAGES:
                manifests[run_dir.resolve()] = manifest
            elif manifest.get("stage") == PRETRAIN_STAGE:
                pretrainings[run_dir.resolve()] = manifest
            elif manifest.get("stage") == "search":
                searches.append(run_dir)
    results = bool(manifests)  # else the pre-trainings are the results (a pretrain sweep)
    manifests = manifests or pretrainings
    if not manifests:
        searched = (
            f" (only search runs, which have no table: draw one with sparsebert report --figures "
            f"{searches[0]})"
            if searches
            else ""
        )
        raise SparseBertError(
            f"no pipeline, finetune, evaluate or pretrain run folder (with a {runs.MANIFEST}) under "
            f"{', '.join(str(p) for p in paths)}{searched}; pass a sweep folder such as "
            "runs/pipeline/multirun/<sweep_name> or a run folder."
        )
    consumed = {
        runs.relocated(
            str(upstream["run_dir"]), runs_root(run_dir, str(manifest["stage"]))
        ).resolve()
        for run_dir, manifest in manifests.items()
        for upstream in manifest["inputs"].values()
        if isinstance(upstream, dict) and upstream.get("run_dir")
    }
    apart = sorted(run_dir for run_dir in pretrainings if results and run_dir not in consumed)
    if apart:  # a table of results shows a pre-training only through the results made from it
        warnings.append(
            f"{len(apart)} pretrain run(s) left out of the table, as no pipeline, finetune or "
            f"evaluate run given here starts from them (e.g. {apart[0]}); report them on their "
            "own: sparsebert report <their sweep folder or run folders>."
        )
    records = []
    results_seen: set[str] = set()
    for run_dir, manifest in manifests.items():
        if run_dir in consumed:
            continue
        # Two sweep jobs whose configs differ only in settings the mask ignores reuse the same
        # evaluate run: one result, counted once.
        result = (manifest["inputs"].get("evaluate") or {}).get("run_dir")
        if result in results_seen:
            continue
        if result:
            results_seen.add(result)
        status = runs.observed_status(run_dir, manifest) or "running"
        metrics_path = run_dir / runs.METRICS
        metrics = {}
        if status == "completed":
            try:
                require(metrics_path.is_file(), f"it completed but has no {runs.METRICS}")
                metrics = runs.read_metrics(run_dir)
            except SparseBertError as e:
                warnings.append(f"{run_dir} skipped: {e}")
                continue
        stage = str(manifest.get("stage"))
        root = runs_root(run_dir, stage)
        grouping = _grouping_dir(run_dir, manifest, root)
        try:  # the settings that place the run in the table: a row of None without them
            config, overrides = _run_settings(grouping)
        except SparseBertError as e:
            warnings.append(f"{run_dir} skipped: {e}")
            continue
        if stage != PRETRAIN_STAGE:
            pretrain = _pretrain(run_dir, manifest, root)
        else:  # a pre-training result is its own held-out numbers (none until it completes)
            pretrain = _pretrain_metrics(run_dir) if status == "completed" else None
        records.append(
            RunRecord(
                dir=run_dir,
                status=status,
                config=config,
                overrides=overrides,
                metrics=metrics,
                error=manifest.get("error"),
                sparsity=_sparsity(
                    run_dir, metrics, _input_dirs(run_dir, manifest, root, warnings)
                ),
                pretrain=pretrain,
                stage=stage,
                searched=_searched(config),
                model_run=_model_run(config),
            )
        )
    return records, warnings
