"""Checks of a config that types alone cannot express, each refused with the value and a fix.

Four steps, all before anything is loaded or trained (and all run by `sparsebert validate`):
`check_overrides` refuses command-line keys the schema does not have (a `+key` too, with a
did-you-mean) and keys the stage does not read; `validate_config` checks choices, the ranges of
`config.RANGES` and combinations of the composed config; `preflight` checks what lies outside the
config: named files and folders, the device, and the upstream runs that `model.from` / `mask.from`
name; `check_command` what the command line asks of the composed config (no model size beside
loaded weights, no unread mask.from in a single run).
"""

import dataclasses
import difflib
import logging
import os
import types
import typing
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ValidationError
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode

from sparsebert_cli import config as schema
from sparsebert_cli import runs
from sparsebert_cli.data.config import (
    HELD_OUT_SEED,
    SELECTIONS,
    SPLIT_NAMES,
    recorded_task,
    tokenizer_path_problem,
    unread_data_field_problem,
    unread_task_field_problem,
)
from sparsebert_cli.errors import SparseBertError, refuse, require
from sparsebert_cli.masks.config import (
    ATTENTION_TOPK,
    DAM_KINDS,
    DAM_STRUCTURES,
    L1_NORMS,
    META_FILE,
    SEARCH_OBJECTIVES,
    SEARCHED_MASKS,
    check_dam_config,
    check_dam_u_size,
    head_warmup_problem,
    mask_identity,
    physical_memory,
    unread_field_problem,
)
from sparsebert_cli.stages import (
    INHERITED,
    NOT_HASHED_TRAINER,
    READS,
    UNNAMED_TRAINER,
    hashed_config,
    per_step_overrides,
    reads,
)
from sparsebert_cli.stages.inputs import (
    check_positions,
    resolve_upstream,
    sequence_lengths,
)
from sparsebert_cli.training import config as trainer_schema
from sparsebert_cli.user_paths import folder_problem, path_is

log = logging.getLogger(__name__)

MASK_SPECIAL = ("dense", "dam", ATTENTION_TOPK, "from_run", "checkpoint")
CHOICES = {
    "mask.objective": SEARCH_OBJECTIVES,
    "mask.structure": DAM_STRUCTURES,
    "mask.l1_norm": L1_NORMS,
    "model.attention_backend": schema.BACKENDS,
    "model.norm": schema.NORM_POSITIONS,
    "model.position_init": schema.POSITION_INITS,
    "trainer.optimizer": trainer_schema.OPTIMIZERS,
    "trainer.scheduler": trainer_schema.SCHEDULERS,
    "trainer.precision": trainer_schema.PRECISIONS,
    "trainer.device": trainer_schema.DEVICES,
    "logger.name": schema.LOGGERS,
    "logger.mode": schema.LOGGER_MODES,
    "resume": schema.RESUME_MODES,
    "task.select": SELECTIONS,
}


def _get(cfg: DictConfig, dotted: str):
    return OmegaConf.select(cfg, dotted, throw_on_missing=False)


def mask_names() -> list[str]:
    from sparsebert_cli.masks.patterns import PATTERNS

    return sorted({*PATTERNS, *MASK_SPECIAL})


# --- keys -------------------------------------------------------------------------------------


def schema_fields(node: type = schema.RunConfig, prefix: str = "") -> dict[str, type]:
    """{dotted key: its annotated type} for every field of the schema, groups included."""
    found = {}
    hints = typing.get_type_hints(node)
    for f in dataclasses.fields(node):
        key, kind = f"{prefix}{f.name}", hints[f.name]
        found[key] = kind
        if dataclasses.is_dataclass(kind):
            found |= schema_fields(kind, f"{key}.")
    return found


def schema_keys() -> tuple[set[str], set[str]]:
    """(every dotted key of the schema, the keys whose children are free: dict settings)."""
    fields = schema_fields()
    return set(fields), {key for key, kind in fields.items() if typing.get_origin(kind) is dict}


def group_names() -> set[str]:
    return {p.name for p in schema.conf_dir().iterdir() if p.is_dir()}


def help_groups(stage: str) -> str:
    """`group: option, option` per config group `sparsebert <stage>` takes: the `sb_help_groups`
    resolver of `--help` (conf/hydra/default.yaml; Hydra's own list names every group in conf/,
    also those the stage refuses)."""
    keys, _ = schema_keys()
    groups = group_names() - {"hydra"}
    lines = [
        f"{group}: {', '.join(_options(group))}"
        for group in sorted(groups)
        if _read(stage, group, keys, groups)
    ]
    return "Compose your configuration from those groups (group=option)\n\n" + "\n".join(lines)


def schema_override_key(override: str) -> str | None:
    """The schema key a command-line override sets (`+mask.lam=1` → mask.lam), or None for a
    flag, a value of a flag, or a Hydra-internal setting. A deletion needs no value (`~key`)."""
    if override.startswith("-") or ("=" not in override and not override.startswith("~")):
        return None
    key = schema.override_key(override)
    if key.startswith("hydra") or "/" in key or "@" in key:
        return None
    return key


def check_overrides(stage: str, overrides: list[str]) -> None:
    """Refuse keys outside the schema (with a did-you-mean) and keys `stage` does not read."""
    keys, open_keys = schema_keys()
    groups = group_names()
    for override in overrides:
        key = schema_override_key(override)
        if key is None:
            continue
        parent = key.rsplit(".", 1)[0]
        known = (
            key in keys
            or key in groups
            or any(parent == k or parent.startswith(f"{k}.") for k in open_keys)
        )
        if not known:
            close = difflib.get_close_matches(key, sorted(keys | groups), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            added = " (`+` adds a key that nothing would read)" if override.startswith("+") else ""
            raise SparseBertError(
                f"{key} is not a setting of sparsebert{added}; {hint}`sparsebert {stage} --cfg "
                "job` prints every setting with its value."
            )
        _check_prefix(stage, override, key, keys, groups)
        if _read(stage, key, keys, groups):
            continue
        if key in groups and key not in keys:
            raise SparseBertError(
                f"`sparsebert {stage}` takes no preset ({override}): a preset sets the settings of "
                f"the training stages. {_unread_reason(stage)} Leave {override} out and set what "
                f"{stage} reads directly (`sparsebert {stage} --cfg job` lists it)."
            )
        raise SparseBertError(
            f"`sparsebert {stage}` does not read {key} ({override}): {_unread_reason(stage)} "
            f"Leave it out, or set it on the stage that reads it."
        )


def _check_prefix(stage: str, override: str, key: str, keys: set[str], groups: set[str]) -> None:
    """Refuse what Hydra would refuse with its own multi-line error: `~` on a setting (the
    schema cannot lose one), `+` on a group the stage composes or on a setting that is no list or
    mapping (`+` adds a key that is not there yet)."""
    value = override.split("=", 1)[1] if "=" in override else ""
    if override.startswith("~") and key in keys and key in groups:
        raise _group_needed(override, key)
    if override.startswith("~") and key in keys:
        raise SparseBertError(
            f"{override}: a setting cannot be deleted (every stage's schema holds all of them); "
            f"set {key} to another value, or leave it out for its default."
        )
    if not override.startswith("+") or override.startswith("++"):
        return
    composed = key in groups and key in _composed_groups(stage)
    container = value.startswith(("[", "{")) or typing.get_origin(_leaf_types().get(key)) in (
        list,
        dict,
    )
    if composed or (key in keys and key not in groups and not container):
        what = "a config group of" if composed else "a setting of"
        raise SparseBertError(
            f"{override}: {key} is already {what} `sparsebert {stage}` (`+` adds a key that is "
            f"not there yet); drop the +: {override.lstrip('+')}."
        )


def _read(stage: str, key: str, keys: set[str], groups: set[str]) -> bool:
    """Whether `stage` reads what setting `key` sets: a group choice (mask=dense) sets the whole
    group, so the stage must read all of it; a preset (debug=, experiment=), which sets keys of
    several groups, is taken by the stages whose primary config composes it."""
    if key in groups and key in keys:
        return key in READS[stage]
    if key in groups:
        return key in _composed_groups(stage)
    return reads(stage, key)


def _composed_groups(stage: str) -> set[str]:
    """The config groups in the defaults list of conf/<stage>.yaml."""
    defaults = OmegaConf.load(schema.conf_dir() / f"{stage}.yaml").defaults
    return {next(iter(entry)) for entry in defaults if isinstance(entry, DictConfig)}


def read_overrides(stage: str, overrides: list[str]) -> list[str]:
    """The overrides whose keys `stage` reads (the pipeline hands each step only those)."""
    keys, _ = schema_keys()
    groups = group_names()
    return [
        o
        for o in overrides
        if (k := schema_override_key(o)) is None or _read(stage, k, keys, groups)
    ]


def _unread_reason(stage: str) -> str:
    if stage == "evaluate":
        return (
            "evaluate takes the model, its mask and its task settings from the finetune run "
            f"(model.from=<run>); it reads only {', '.join(READS['evaluate'])}."
        )
    return f"nothing in {stage} uses it."


# --- the composed config ----------------------------------------------------------------------


def check_ranges(cfg: DictConfig, stage: str) -> None:
    """Every number of `config.RANGES` that `stage` reads lies in its range."""
    for key, allowed in schema.RANGES.items():
        if not reads(stage, key):
            continue
        value = _get(cfg, key)
        values = list(value) if isinstance(value, ListConfig) else [value]
        for v in values:
            if v is None:
                continue
            # a bool, or text an interpolation resolved to (seed=${oc.env:HOME}), is no number
            if isinstance(v, bool) or not isinstance(v, int | float) or not allowed.holds(v):
                # a whole number in (1, 100] for a fraction reads as a percentage (80 for 0.8)
                number = isinstance(v, int | float) and not isinstance(v, bool)
                percent = number and allowed.high == 1 and 1 < v <= 100 and v == int(v)
                raise SparseBertError(
                    f"{key}={value} must be {allowed}; set {key} to a value in that range"
                    + (f" (a fraction: {key}={v / 100:g} for {v:g} %)." if percent else ".")
                )


def validate_config(cfg: DictConfig) -> None:
    """Raise SparseBertError for the first value of the composed config that cannot work."""
    stage = cfg.stage
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        require(
            not reads(stage, key) or value in allowed,
            f"{key}={value} is not one of {', '.join(allowed)}; set {key}=<one of them>.",
        )
    check_ranges(cfg, stage)
    if reads(stage, "data.max_predictions_per_seq"):
        most, n = cfg.data.max_predictions_per_seq, cfg.data.seq_len
        require(
            most <= n,
            f"data.max_predictions_per_seq={most} is more than the data.seq_len={n} tokens of a "
            f"sequence; set data.max_predictions_per_seq={max(1, round(0.15 * n))} (BERT masks "
            f"15 %) or at most {n}.",
        )
    if stage == "pipeline":  # refused up front, not when the pipeline reaches that step
        for step, overrides in per_step_overrides(cfg).items():
            check_overrides(step, schema.rewrite_aliases(overrides))
            if step == "finetune":
                check_no_sizes(overrides, "the pipeline's pretrain step")
    if stage == "evaluate":
        require(
            bool(cfg.model.from_run),
            "`sparsebert evaluate` evaluates a fine-tuned run, but model.from is not set; add "
            "model.from=<finetune run folder> or model.from=latest.",
        )
        return
    _check_sources(cfg, stage)
    mask, model, trainer = cfg.mask, cfg.model, cfg.trainer
    names = mask_names()
    require(
        mask.name in names,
        f"mask.name={mask.name} is not a known mask; use mask=<{'|'.join(names)}>.",
    )
    check_dam_config(mask)
    from sparsebert_cli.masks.patterns import PATTERNS, pattern_mask

    if mask.name in PATTERNS:  # the pattern's own checks of its parameters (none depends on n)
        pattern_mask(mask, 1, 1)
    require(
        mask.name != "from_run" or bool(mask.from_run),
        "mask=from_run needs the search run to load: add mask.from=<run_dir> or mask.from=latest.",
    )
    require(
        stage != "search" or mask.name in SEARCHED_MASKS,
        f"`sparsebert search` learns a mask, but mask={mask.name} is fixed; use mask=dam (or mask=dam_s), "
        "or run `sparsebert pretrain mask=...` for a fixed pattern.",
    )
    require(
        mask.name != ATTENTION_TOPK or stage in ("search", "pipeline"),
        f"mask={ATTENTION_TOPK} is made by `sparsebert search mask={ATTENTION_TOPK}`; the "
        f"{stage} stage uses it afterwards as mask=from_run mask.from=<that search run>.",
    )
    search_protocol = (mask.objective, mask.head_warmup, mask.encoder_lr) != ("mlm", 0, None)
    require(
        cfg.stage in ("search", "pipeline") or not search_protocol,
        "mask.objective, mask.head_warmup and mask.encoder_lr set how `sparsebert search` learns "
        f"a mask on a trained model; the {cfg.stage} stage does not read them: drop them.",
    )
    warm_started = bool(model.from_run or model.name_or_path)
    require(
        mask.name != ATTENTION_TOPK or (warm_started and mask.target_sparsity is not None),
        f"mask={ATTENTION_TOPK} keeps the entries a trained dense model attends to most, at "
        f"mask.target_sparsity (now {mask.target_sparsity}); it needs model.from=<pretrain run> "
        "(or model=minilm) and a target, e.g. mask.target_sparsity=0.8.",
    )
    require(
        mask.objective != "distill" or mask.head_warmup == 0,
        f"mask.head_warmup={mask.head_warmup} warms up the MLM head on the dense model, but "
        "mask.objective=distill trains no head (it keeps the dense model's hidden states), so "
        "the warm-up steps would train nothing; drop mask.head_warmup.",
    )
    if stage in ("search", "pipeline") and trainer.epochs == 0:  # by epochs: the loop checks
        refuse(head_warmup_problem(mask.head_warmup, trainer.max_steps))
    require(
        mask.objective != "distill" or warm_started,
        "mask.objective=distill keeps the hidden states of the dense model the search starts "
        "from, but no trained model is loaded; add model.from=<pretrain run> or model=minilm.",
    )
    require(
        mask.name != "checkpoint" or bool(model.from_run or model.name_or_path),
        "mask=checkpoint means the mask stored with the model, but no model is loaded; set "
        "model.from=<a pretrain run> (or model=minilm / model=hf "
        "model.name_or_path=<name>), or name a mask (e.g. mask=dense).",
    )
    require(
        model.hidden_size % model.num_heads == 0,
        f"model.hidden_size={model.hidden_size} is not divisible by model.num_heads={model.num_heads}; "
        "choose sizes where it is (e.g. 256 and 4).",
    )
    for key in sequence_lengths(stage) if not warm_started else ():  # else: `check_positions`
        n = _get(cfg, key)
        require(
            n <= model.max_position_embeddings,
            f"{key}={n} is longer than model.max_position_embeddings={model.max_position_embeddings}; "
            f"lower {key} or raise model.max_position_embeddings.",
        )
    require(
        stage != "pretrain" or mask.name != "dam",
        "`sparsebert pretrain` trains with a fixed mask, but mask=dam learns one: search it with "
        "`sparsebert search mask=dam`, then pre-train with `sparsebert pretrain mask=from_run "
        "mask.from=latest` (`sparsebert pipeline mask=dam` does both).",
    )
    if mask.name == "dam":  # its α are learned on this stage's sequences, entry by entry
        from sparsebert_cli.attention.capabilities import check_backend

        if stage != "pipeline":  # a pipeline's search step may set its own backend
            check_backend(model.attention_backend, "dam")  # the run refused it once started
        key = "task.seq_len" if stage == "finetune" else "data.seq_len"
        n = _get(cfg, key)
        require(
            mask.seq_len == n,
            f"mask.seq_len={mask.seq_len} is the length the DAM learns its mask at, but {key}={n}: "
            + (
                f"the α of positions ≥ {n} would never see a token, and the saved mask would "
                "leave those queries with no key"
                if mask.seq_len > n
                else "the sequences would be longer than the mask"
            )
            + f"; set mask.seq_len={n} (or {key}={mask.seq_len}).",
        )
    require(
        not reads(stage, "task.fold") or cfg.task.fold < cfg.task.num_folds,
        f"task.fold={cfg.task.fold} is not a fold of task.num_folds={cfg.task.num_folds}; "
        f"use task.fold=0..{cfg.task.num_folds - 1}.",
    )
    if reads(stage, "task.name"):
        _check_head_outputs(cfg.task)
    if reads(stage, "task.name") and cfg.task.kind != "question_answering":  # spans: squad.py
        _check_task_scoring(cfg.task)
    require(
        trainer.precision != "fp16" or trainer.device != "cpu",
        "trainer.precision=fp16 needs a CUDA device; on CPU use trainer.precision=bf16 or fp32.",
    )
    require(
        trainer.max_steps >= 1 or trainer.epochs >= 1,
        "set trainer.max_steps ≥ 1 or trainer.epochs ≥ 1.",
    )
    require(
        len(trainer.betas) == 2,
        f"trainer.betas={list(trainer.betas)} must be two numbers (Adam's β1 and β2); write "
        "e.g. trainer.betas=[0.9,0.999].",
    )
    per_step = trainer.grad_accum * trainer.nproc_per_node
    require(
        trainer.batch_size % per_step == 0,
        f"trainer.batch_size={trainer.batch_size} (the global batch) must be a positive multiple of "
        f"trainer.grad_accum × trainer.nproc_per_node = {per_step}.",
    )


def _check_sources(cfg: DictConfig, stage: str) -> None:
    """Data sources that would be ignored: a sentence_sources entry that names no hub source,
    a local task source the task's kind does not read, two local sources at once (the first
    won and the other went unread)."""
    from sparsebert_cli.data.config import source_dataset, task_source_problem

    if reads(stage, "data.sentence_sources"):
        hub = {source_dataset(s) for s in cfg.data.hub_sources}
        for entry in cfg.data.sentence_sources:
            require(
                source_dataset(entry) in hub,
                f"data.sentence_sources lists '{entry}', which is none of data.hub_sources="
                f"{list(cfg.data.hub_sources)}, so no source would be grouped into documents; "
                "name the dataset as data.hub_sources does (a revision may be left out).",
            )
    if reads(stage, "task.name"):
        refuse(task_source_problem(cfg.task))


def _check_head_outputs(task: DictConfig) -> None:
    """task.num_labels of a kind whose head size is fixed (regression, spans, SWAG) says so: the
    head is built from the kind, so another value was accepted and ignored."""
    from sparsebert_cli.data.metrics import FIXED_OUTPUTS

    fixed = FIXED_OUTPUTS.get(task.kind)
    require(
        fixed is None or task.num_labels == fixed,
        f"task.num_labels={task.num_labels}, but a {task.kind} task's head has {fixed} "
        f"output(s) whatever the data; drop task.num_labels (task={task.name} sets {fixed}).",
    )


def _check_task_scoring(task: DictConfig) -> None:
    """The task has metrics that fit its kind and labels, and a classification names each of
    its labels, before any training (a custom task name, or 3 labels under a binary-F1 task,
    failed only when the trained model was scored)."""
    from sparsebert_cli.data.metrics import task_metrics

    kind, metrics, _ = task_metrics(task.name)
    require(
        task.kind == kind,
        f"task.kind={task.kind}, but task '{task.name}' is scored as {kind}; keep "
        f"task.kind={kind}, or put the data under a {task.kind} task.",
    )
    require(
        "f1" not in metrics or task.num_labels == 2,
        f"task.num_labels={task.num_labels}, but task '{task.name}' computes binary F1 "
        "(class 1 positive); data with other than 2 labels go in under a task scored by "
        "accuracy alone (e.g. task=mnli for 3 labels, or task=sst2) with task.num_labels and "
        "task.label_names set.",
    )
    names = list(task.label_names)
    require(
        task.kind != "classification" or task.num_labels == len(names),
        f"task.num_labels={task.num_labels} but task.label_names has {len(names)} names "
        f"({names}): the labels as the data write them, one per class; set both, e.g. "
        f"task.num_labels={task.num_labels} task.label_names="
        f"[{','.join(map(str, range(task.num_labels)))}] for class ids.",
    )
    twice = sorted({str(name) for name in names if names.count(name) > 1})
    require(
        not twice,
        f"task.label_names={names} names {', '.join(twice)} twice: each class needs its own name "
        "(two classes of one name would read as one); give one name per class.",
    )


# --- outside the config -----------------------------------------------------------------------

# Task and data settings that name files or folders, checked to exist before any work.
PATH_KEYS = ("task.glue_dir", "task.data_dir")


def check_no_sizes(overrides: list[str], weights: str) -> None:
    """Refuse a model size on the command line of a model loaded from `weights`: its checkpoint
    fixes them (`config.CHECKPOINT_FIELDS`), the override would be ignored."""
    sizes = [f"model.{field}" for field in schema.CHECKPOINT_FIELDS]
    for key in (schema_override_key(o) for o in overrides):
        require(
            key not in sizes,
            f"{key} sets up a new model, but the weights come from {weights}, whose config "
            f"fixes it; drop {key}, or train a new model of that size without loading weights.",
        )


def unused_max_steps(cfg: DictConfig, overrides: list[str]) -> str | None:
    """Why a trainer.max_steps among `overrides` goes unused, or None: the stage trains by
    epochs (finetune's default), which take precedence."""
    steps = [o for o in overrides if schema_override_key(o) == "trainer.max_steps"]
    if not steps or not reads(cfg.stage, "trainer.epochs") or cfg.trainer.epochs == 0:
        return None
    return (
        f"{steps[-1]} is not used: {cfg.stage} trains by epochs (trainer.epochs="
        f"{cfg.trainer.epochs}), which take precedence over max_steps"
    )


def check_command(cfg: DictConfig, overrides: list[str], single_run: bool) -> None:
    """What the command line (`overrides`) must not ask of the composed config: a model size
    beside loaded weights (their checkpoint fixes it: the override would be ignored), max_steps
    beside epochs > 0 (finetune's default: epochs win), and, in a single run, mask.from or
    another mask setting beside a mask that does not read it, and a pipeline's search-step
    overrides beside a mask it does not search (a sweep over masks sets them for the jobs whose
    mask reads them, the others leave them unread)."""
    weights = _get(cfg, "model.from_run") or _get(cfg, "model.name_or_path")
    if weights:
        check_no_sizes(overrides, weights)
    unused = unused_max_steps(cfg, overrides)
    if unused:
        raise SparseBertError(
            f"{unused}; add trainer.epochs=0 to train by steps instead, or drop trainer.max_steps."
        )
    if not single_run:
        return
    if reads(cfg.stage, "mask"):
        require(
            not cfg.mask.from_run or cfg.mask.name == "from_run",
            f"mask.from={cfg.mask.from_run} names the search run whose mask mask=from_run uses, "
            f"but mask={cfg.mask.name} does not read it; add mask=from_run (or drop mask.from).",
        )
    for key in filter(None, map(schema_override_key, overrides)):
        if key.startswith("mask."):
            refuse(unread_field_problem(cfg.mask, schema.schema_key(key)[len("mask.") :]))
        # evaluate's task is its finetune run's: its data source is checked against it (preflight)
        if key.startswith("task.") and reads(cfg.stage, key) and cfg.stage != "evaluate":
            refuse(unread_task_field_problem(cfg.task, key.removeprefix("task.")))
        if key.startswith("data.") and reads(cfg.stage, key):
            refuse(unread_data_field_problem(cfg.data, key.removeprefix("data.")))
        if key.startswith("logger.") and key != "logger.name" and cfg.logger.name == "none":
            raise SparseBertError(
                f"{key} is set, but logger=none logs to the run folder's metrics.jsonl only, so "
                f"it would be ignored; add logger=wandb to log to W&B, or drop {key}."
            )
        if key == "pipeline.search":
            require(
                cfg.mask.name in SEARCHED_MASKS,
                f"pipeline.search sets the search step's overrides, but mask={cfg.mask.name} is "
                "not searched: this pipeline runs pretrain, finetune and evaluate. Drop "
                "pipeline.search, or choose a searched mask (mask=dam, dam_s, dam_block or "
                "attention_topk).",
            )


def preflight(cfg: DictConfig, device_here: bool = True) -> dict[str, Path]:
    """Check the files, folders, device and upstream runs the job needs, before any work;
    `device_here`: the job runs on this machine (not through a cluster launcher's compute node).

    Returns the upstream run folders that `model.from` / `mask.from` resolve to (by key)."""
    check_local_inputs(cfg, device_here)
    upstream = resolve_upstream(cfg)
    if cfg.stage == "evaluate":  # the finetune run's task, with the data source given here
        _check_recorded_task(cfg, upstream["model.from_run"])
    else:
        weights = _local_weights(cfg, upstream)
        _check_dam_u_fits(cfg, weights)
        if weights is not None:
            check_positions(cfg, weights)
            if cfg.stage == "finetune" and cfg.mask.name == "checkpoint":
                _note_stored_mask_length(cfg, weights)
            if cfg.stage == "pretrain" and cfg.mask.name != "checkpoint":
                _note_replaced_mask(cfg, weights)
            if cfg.mask.name == ATTENTION_TOPK:
                _check_trained_dense(weights)
        if cfg.stage in ("pretrain", "search") and "model.from_run" in upstream:
            _note_other_held_out(cfg, upstream["model.from_run"])
        if "mask.from_run" in upstream and (weights or not cfg.model.name_or_path):
            _check_searched_mask(cfg, upstream["mask.from_run"], weights)
    return upstream


def _check_recorded_task(cfg: DictConfig, finetune_run: Path) -> None:
    """The task evaluate will read: the finetune run's, its data source replaced by one given to
    evaluate (a GLUE folder for a GLUE task only) or else still where that run read it."""
    from sparsebert_cli.pretrained import CHECKPOINT_FILE, read_record

    model = runs.layout(finetune_run).model
    if not (model / CHECKPOINT_FILE).is_file():  # the stage refuses the run, naming the fix
        return
    record = read_record(model)
    if "task" in record:  # none: a pre-trained model, which evaluate refuses naming the fix
        recorded_task(record["task"], cfg.task, finetune_run)


def _check_dam_u_fits(cfg: DictConfig, weights: Path | None) -> None:
    """A DAM_u search too large for this machine is refused before any data are read (the
    model's heads and layers: the loaded checkpoint's, else model.*)."""
    mask = cfg.mask
    dam_u = mask.name == "dam" and mask.structure == "unstructured"
    if cfg.stage not in ("search", "pipeline") or not dam_u:
        return
    heads, layers = cfg.model.num_heads, cfg.model.num_layers
    if weights is not None:
        from sparsebert_cli.pretrained import read_bert_config

        bert = read_bert_config(weights)
        heads, layers = bert.num_attention_heads, bert.num_hidden_layers
    check_dam_u_size(mask.seq_len, heads, 1 if mask.share_layers else layers)


def check_local_inputs(cfg: DictConfig, device_here: bool = True) -> None:
    """The data folders and files and the device the job reads: what `preflight` checks
    without its upstream runs (a pipeline's later steps are checked so before the first runs)."""
    stage = cfg.stage
    for key in PATH_KEYS:
        value = _get(cfg, key)
        if value and reads(stage, key) and not path_is(Path.is_dir, value):
            raise SparseBertError(
                f"{key}={value} is not a folder; point {key} at the folder that holds the data."
            )
    tokenizer = _get(cfg, "data.tokenizer")
    if tokenizer and reads(stage, "data.tokenizer"):
        refuse(tokenizer_path_problem(tokenizer))
    files = _get(cfg, "task.data_files") or {}
    if reads(stage, "task.data_files"):
        for split in files:
            require(
                split in SPLIT_NAMES,
                f"task.data_files names a split {split!r}, which no stage reads (its file would be "
                f"ignored); name the splits among {', '.join(SPLIT_NAMES)} (the _mismatched ones "
                "are MNLI's), e.g. task.data_files={train: train.csv, dev: dev.csv, test: "
                "test.csv}.",
            )
        for split, path in files.items():
            if not path_is(Path.is_file, path):
                raise SparseBertError(
                    f"task.data_files.{split}={path} is not a file; point it at the {split} split's "
                    "csv/json/parquet file."
                )
    _check_data_files(cfg)
    if device_here:
        _check_device(cfg)
        _check_machine(cfg)


# Bytes a parameter takes while training: fp32 weight, gradient and AdamW's two moments.
TRAINING_BYTES_PER_PARAMETER = 16


def _check_machine(cfg: DictConfig) -> None:
    """What the machine the job runs on cannot give: more CPU threads than it has (libgomp fails
    or the process crashes), or a new model whose parameters alone, while training, need more
    than its memory (killed, or a bare allocator error deep in torch)."""
    stage, cpus = cfg.stage, os.cpu_count() or 1
    threads = cfg.trainer.num_threads if reads(stage, "trainer.num_threads") else 0
    require(
        threads <= cpus,
        f"trainer.num_threads={threads} is more than the {cpus} CPUs here; set "
        f"trainer.num_threads={cpus} or less (0 leaves torch's default).",
    )
    model = cfg.model
    if stage == "evaluate" or model.from_run or model.name_or_path:
        return  # the sizes come from the checkpoint
    hidden, inner, layers = model.hidden_size, model.intermediate_size, model.num_layers
    # positions, and per layer the attention's four H × H and the feed-forward's two H × I (the
    # vocabulary's rows, unknown before the tokenizer, only add to it)
    parameters = model.max_position_embeddings * hidden + layers * (
        4 * hidden**2 + 2 * hidden * inner
    )
    need, memory = TRAINING_BYTES_PER_PARAMETER * parameters, physical_memory()
    require(
        need <= memory,
        f"the model's sizes (model.num_layers={layers}, model.hidden_size={hidden}, "
        f"model.intermediate_size={inner}, model.max_position_embeddings="
        f"{model.max_position_embeddings}) make at least {parameters / 1e9:.1f} G parameters: "
        f"training them needs at least {need / 2**30:.0f} GiB for weights, gradients and "
        f"optimiser state, more than this machine's {memory / 2**30:.0f} GiB; choose smaller "
        "sizes (model=tiny, small or base).",
    )


def _check_data_files(cfg: DictConfig) -> None:
    """The task's local files (a GLUE folder's, SQuAD's or SWAG's, task.data_files) and
    data.files' matches, checked as the stage's readers take them (evaluate's task, the finetune
    run's, is checked against that run: `_check_recorded_task`)."""
    from sparsebert_cli.data.config import EMBEDDED_CORPORA, no_source_problem, task_source
    from sparsebert_cli.data.corpus import unmatched_files_problem
    from sparsebert_cli.data.glue import missing_glue_file
    from sparsebert_cli.data.squad import local_files as squad_files
    from sparsebert_cli.data.swag import swag_files
    from sparsebert_cli.data.tasks import data_file_paths

    if cfg.stage == "finetune":  # the readers' own checks, by the task's kind and source
        task, source = cfg.task, task_source(cfg.task)
        if task.kind == "question_answering":
            squad_files(task)
        elif task.kind == "multiple_choice":
            swag_files(task)
        elif source == "data_files":
            data_file_paths(task)
        elif source == "glue_dir":
            refuse(missing_glue_file(task.name, Path(task.glue_dir)))
        else:
            refuse(no_source_problem(task))
    if reads(cfg.stage, "data.files") and cfg.data.name not in EMBEDDED_CORPORA:
        for pattern in cfg.data.files:
            refuse(unmatched_files_problem(pattern))


def _note_stored_mask_length(cfg: DictConfig, weights: Path) -> None:
    """A damaged stored mask.json is refused as loading the model would; one shorter than
    task.seq_len is refused only once the task data are read, if a batch is longer
    (stages/finetune.check_stored_mask_covers): say so now."""
    from sparsebert_cli.masks.artifact import read_meta

    if not (weights / META_FILE).is_file():
        return
    n = read_meta(weights / META_FILE)["n"]
    if n < cfg.task.seq_len:
        log.warning(
            "the mask stored with the model in %s covers n=%d tokens but task.seq_len=%d: "
            "fine-tuning stops before training if a batch of task=%s is longer than %d tokens "
            "(known once the data are read); set task.seq_len=%d to truncate the inputs instead.",
            weights, n, cfg.task.seq_len, cfg.task.name, n, n,
        )  # fmt: skip


def _check_trained_dense(weights: Path) -> None:
    """mask=attention_topk reads where a dense model attends: a model trained with a sparse mask
    ran dense for it, computing what it never learned."""
    from sparsebert_cli.modeling import recorded_mask

    kind = recorded_mask(weights)
    require(
        kind in (None, "dense"),
        f"the model in {weights} was pre-trained with the {kind} mask, but mask={ATTENTION_TOPK} "
        "keeps the entries a dense model attends to most (it runs the model dense, which this "
        "one never learned); start from a pre-training with mask=dense (model.from=<its run>) "
        "or a Hugging Face model (model=minilm).",
    )


def _note_replaced_mask(cfg: DictConfig, weights: Path) -> None:
    """Pre-training goes on from a model with a stored sparse mask under another mask (pretrain's
    default is mask=dense, finetune's mask=checkpoint): say so, it is easy to miss."""
    from sparsebert_cli.masks.artifact import read_meta

    if not (weights / META_FILE).is_file():
        return
    meta = read_meta(weights / META_FILE)
    kind = meta["kind"]
    if mask_identity(cfg.mask) != {"name": kind, **meta.get("params", {})}:  # not the same one
        log.warning(
            "the model in %s was trained with the %s mask stored beside it; this pre-training "
            "uses mask=%s and stores that one with the model instead; add mask=checkpoint to "
            "go on with the stored mask.",
            weights, kind, cfg.mask.name,
        )  # fmt: skip


def _note_other_held_out(cfg: DictConfig, upstream: Path) -> None:
    """A continuation of a pre-training (`upstream`) whose held-out documents are not those its
    checkpoint was trained beside: its eval/mlm_* may count documents the checkpoint trained on.
    Say so (continuing on another corpus on purpose is fine)."""
    from importlib.metadata import PackageNotFoundError

    from sparsebert_cli.data.pretraining import held_out_identity

    recorded = upstream / runs.CONFIG
    if not recorded.is_file():
        return
    before = OmegaConf.load(recorded)
    if _held_out_by_its_seed(OmegaConf.to_container(before, resolve=True), upstream):
        log.warning(
            "%s was pre-trained before 02ef264, with seed %s, when a run's seed drew its held-out "
            "documents; this run holds out seed %d's, most of which that model trained on: its "
            "eval/mlm_* are not held-out measurements. Pre-train it again for them.",
            upstream, before.seed, HELD_OUT_SEED,
        )  # fmt: skip
        return
    try:
        theirs = held_out_identity(before.data)
    except (AttributeError, PackageNotFoundError):  # recorded by a version without some data
        return  # key, or of an embedded corpus not installed here: nothing to compare
    ours = held_out_identity(cfg.data)
    differ = [f"data.{k}" if k in cfg.data else k for k in ours if ours[k] != theirs.get(k)]
    if differ:
        log.warning(
            "the held-out documents of this run are not those of %s, which this model comes "
            "from (%s differ): eval/mlm_* may count documents it trained on; keep data.* and "
            "data.eval_fraction as that run had them for a held-out measurement.",
            upstream, ", ".join(differ),
        )  # fmt: skip


def _held_out_by_its_seed(recorded: dict, run_dir: Path) -> bool:
    """Whether a pre-training run with a seed ≠ HELD_OUT_SEED is of before 02ef264: its recorded
    content hash is that of its config without the `held_out_seed` key (stages.hashed_config)."""
    hashed = hashed_config(recorded)
    if hashed.pop("held_out_seed", None) is None:
        return False
    manifest = runs.load_manifest(run_dir) or {}
    return runs.config_hash(hashed) == manifest.get("config_hash")


def _check_searched_mask(cfg: DictConfig, search_dir: Path, weights: Path | None) -> None:
    """The searched mask is intact and fits the model's heads and layers (the loaded model's,
    `weights`) and the stage's sequences, checked as the stage will load it. A hub model's
    shape is known once downloaded: the stage checks then."""
    from sparsebert_cli.masks.artifact import load_mask
    from sparsebert_cli.masks.empty_rows import check_keeps_attention
    from sparsebert_cli.pretrained import model_shape

    layers, heads = model_shape(cfg.model, weights)  # as build_mask_source reads them
    for key in sequence_lengths(cfg.stage):
        mask, meta = load_mask(
            runs.layout(search_dir).artifacts, heads=heads, layers=layers, n=_get(cfg, key)
        )
        try:
            check_keeps_attention(mask, meta)
        except SparseBertError as error:  # `latest` may have named a run the user did not mean
            raise SparseBertError(f"the searched mask of mask.from={search_dir}: {error}") from None


def _check_device(cfg: DictConfig) -> None:
    """The device the job asks for is here: CUDA (with a GPU per DDP rank) for cuda and fp16,
    flex training only where it has a backward pass."""
    stage = cfg.stage
    ranks = _get(cfg, "trainer.nproc_per_node") or 1
    cuda = reads(stage, "trainer.device") and (cfg.trainer.device == "cuda" or ranks > 1)
    # A stage that trains with a sparse mask on flex (a dense one runs SDPA whatever the backend)
    flex = (
        stage != "evaluate" and cfg.model.attention_backend == "flex" and cfg.mask.name != "dense"
    )
    fp16 = reads(stage, "trainer.precision") and cfg.trainer.precision == "fp16"
    if not (cuda or flex or fp16):
        return
    import torch

    from sparsebert_cli.training.loop import resolve_device

    device = resolve_device(cfg.trainer)  # refuses a CUDA device that is not there
    visible = torch.cuda.device_count()
    require(
        device.type != "cuda" or ranks <= visible,
        f"trainer.nproc_per_node={ranks} runs one rank per GPU, but {visible} are visible; set "
        f"trainer.nproc_per_node ≤ {visible}.",
    )
    if flex:
        from sparsebert_cli.attention.capabilities import check_flex

        check_flex(device.type, True, cfg.model.attention_dropout)
    require(
        not fp16 or torch.cuda.is_available(),
        f"trainer.precision=fp16 needs a CUDA device and none is visible (trainer.device="
        f"{cfg.trainer.device}); use trainer.precision=bf16 or fp32 on CPU.",
    )


def _local_weights(cfg: DictConfig, upstream: dict[str, Path]) -> Path | None:
    """The model folder a stage loads weights from, when it is on this machine (a hub model's
    positions are checked once it is downloaded: `stages.inputs.weights_folder`)."""
    if "model.from_run" in upstream:
        return runs.layout(upstream["model.from_run"]).model
    if not cfg.model.name_or_path:
        return None
    from sparsebert_cli.pretrained import local_pretrained

    return local_pretrained(cfg.model.name_or_path)


def describe(cfg: DictConfig, upstream: dict[str, Path]) -> str:
    """The effective choices of a checked config that its stage reads, as `validate` prints them."""
    shown = {
        "evaluate": ("model", "backend"),
        "finetune": ("mask", "model", "backend", "task"),
        "pipeline": ("mask", "model", "backend", "data", "task"),
    }
    parts = {
        "mask": lambda: _described_mask(cfg, upstream),
        "model": lambda: _described_model(cfg, upstream),
        "backend": lambda: cfg.model.attention_backend,
        "task": lambda: cfg.task.name,
        "data": lambda: cfg.data.name,
    }
    keep = shown.get(cfg.stage, ("mask", "model", "backend", "data"))
    return ", ".join(f"{k}={parts[k]()}" for k in keep)


def _described_mask(cfg: DictConfig, upstream: dict[str, Path]) -> str:
    if "mask.from_run" in upstream:
        return f"from_run ({upstream['mask.from_run']})"
    if cfg.mask.name == "dam" and cfg.mask.structure == "structured":
        return DAM_KINDS["structured"]
    return cfg.mask.name


def _described_model(cfg: DictConfig, upstream: dict[str, Path]) -> str:
    model = cfg.model
    if "model.from_run" in upstream:
        return f"from run {upstream['model.from_run']}"
    if model.name_or_path:
        return str(model.name_or_path)
    return f"new ({model.num_layers} layers, {model.hidden_size} hidden, {model.num_heads} heads)"


def check_command_line(stage: str, args: list[str]) -> None:
    """What a stage, `validate` and `--dry-run` all refuse on the command line, before composing:
    unsafe or unreadable overrides, keys outside the schema or that `stage` does not read, group
    options that do not exist and values of the wrong type."""
    check_safe_overrides(args)  # checks a paths.runs_dir given here
    prints_only = any(a.startswith("-") and a not in schema.MULTIRUN_FLAGS for a in args)  # --cfg
    if not prints_only and not any(schema_override_key(a) == "paths.runs_dir" for a in args):
        runs.check_runs_dir(runs.default_runs_dir())
    check_overrides(stage, args)
    sweeps = check_override_values(args)
    if sweeps and not schema.is_multirun(args):
        # refused with the fix, before Hydra answers with its own multi-line error
        raise SparseBertError(
            f"{sweeps[0]} lists several values, a sweep: run it with -m (sparsebert {stage} -m "
            f"... {sweeps[0]}; `sparsebert {stage} -m ... --dry-run` lists its jobs), or give "
            "one value for one job."
        )


# Settings that name no sweep job's folder although the job's identity carries them.
HASHED_UNNAMED = {f"trainer.{k}" for k in UNNAMED_TRAINER if k not in NOT_HASHED_TRAINER}
# Settings that name a local folder or a Hugging Face hub name.
FOLDER_OR_HUB_KEYS = ("model.name_or_path", "data.tokenizer")


def _check_marked_folders(key: str, values: list) -> None:
    """A folder or hub name typed with ./ or ../ (or /, ~) is a folder: refused when it is
    missing. The composed value is normalised (`./bert` is `bert`), which would read as the hub
    name `bert` and blame the network."""
    for value in values:
        problem = folder_problem(value) if isinstance(value, str) else None
        if problem:
            raise SparseBertError(
                f"{key}={value}: the folder {problem}; point it at a save_pretrained folder (or "
                "a hub name, without ./)."
            )


def _leaf_types() -> dict[str, type]:
    """{dotted key: its type, Optional[X] as X} for every leaf of the schema."""
    found = {}
    for key, kind in schema_fields().items():
        if dataclasses.is_dataclass(kind):
            continue
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kind = args[0] if len(args) == 1 else kind
        found[key] = kind
    return found


def _override_values(override) -> list | None:
    """The values an override sets (each of a sweep's), typed as Hydra parsed them; a glob's are
    the options of the group it names that it matches (Hydra's sweeper has none for a setting);
    None for what has no list of values (a deletion, an interval sweep)."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob, RangeSweep

    value = override.value()
    if override.is_delete() or value is None:
        return None
    if isinstance(value, Glob):
        return value.filter(_options(override.key_or_group))
    if override.is_sweep_override():
        return (
            list(override.sweep_iterator()) if isinstance(value, ChoiceSweep | RangeSweep) else None
        )
    return [value]


# The value nodes OmegaConf checks a typed setting with, and how the refusal describes them.
_TYPE_NODES = {bool: (BooleanNode, "true or false"), int: (IntegerNode, "a whole number"),
               float: (FloatNode, "a number")}  # fmt: skip
_TYPE_EXAMPLES = {bool: "true", int: "4", float: "1e-3"}


def _check_container(arg: str, key: str, kind, value) -> None:
    """Refuse one value given to a list or mapping setting (`data.files=a.jsonl`), with the
    brackets that fix it, before Hydra answers with its own merge error."""
    container = typing.get_origin(kind)
    if container not in (list, dict) or value is None or isinstance(value, list | dict):
        return
    if "${" in str(value):  # an interpolation: resolved later
        return
    if container is dict:  # task.data_files, the one mapping (config.MAPPING_FIELDS)
        what, example = "a mapping", f'"{key}={{train: train.csv, dev: dev.csv}}"'
    elif key.startswith("pipeline."):  # a list of overrides: each quoted for Hydra
        what, example = "a list", f"\"{key}=['{value}']\""
    else:
        what, example = "a list", f'"{key}=[{value}]"'
    raise SparseBertError(
        f"{arg}: {key} takes {what}, not the single value {value!r}; write {example} (the "
        "shell's quotes keep the brackets)."
    )


def _parse_override(parser, arg: str):
    """`arg` parsed by Hydra's override grammar; one it cannot read (on the command line or in a
    pipeline's per-step list) refused with the quoting that fixes it."""
    from hydra.errors import HydraException

    try:
        return parser.parse_override(arg)
    except HydraException as e:
        key, _, value = arg.partition("=")
        quoted = f"'{value}'"
        is_list = typing.get_origin(_leaf_types().get(schema.override_key(arg))) is list
        if value.startswith("[") and value.endswith("]"):  # a list: quote each element
            items = [item.strip().strip("'\"") for item in value[1:-1].split(",")]
            quoted = "[" + ",".join(f"'{item}'" for item in items if item) + "]"
        elif is_list:  # one element of a list setting: in brackets
            quoted = f"['{value}']"
        sweep = (  # under -m, `A,B` may be two values: each is quoted on its own
            f" With -m, each value of a sweep is quoted on its own: \"{key}='<one>','<other>'\"."
            if "," in value and not is_list and not value.startswith("[")
            else ""
        )
        raise SparseBertError(
            f"{arg} is not an override Hydra can read ({str(e).splitlines()[0]}). A value "
            "with '=', ',', spaces, brackets or quotes must be quoted inside the override (each "
            "element of a list), the shell's quotes around Hydra's: "
            f'"{key}={quoted}".{sweep}'
        ) from None


def _group_needed(arg: str, group: str) -> SparseBertError:
    """The refusal of an override that leaves a stage without its `group` (`mask=null`)."""
    return SparseBertError(
        f"{arg}: every stage needs a {group}; choose one of {', '.join(_options(group))} "
        f"(conf/{group}/), or leave {group} out for the stage's default."
    )


def _options(group: str) -> list[str]:
    """The options of a config group: its files in conf/<group>/."""
    return sorted(p.stem for p in (schema.conf_dir() / group).glob("*.yaml"))


def check_override_values(args: list[str]) -> list[str]:
    """Refuse a group option with no file in conf/ (`mask=dam_x`) and a number or flag setting
    given a value of another type (`mask.lam=abc`), with the choices or the type, before Hydra
    answers with its own multi-line composition error, and a missing ./folder for a setting that
    takes a folder or a hub name. Returns the overrides that list several
    values (`mask=dense,dam`: a sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    groups, leaf_types, unnamed = group_names(), _leaf_types(), schema.unnamed_overrides()
    sweeps = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        override = _parse_override(parser, arg)
        if override.is_sweep_override():
            sweeps.append(arg)
        key, values = override.key_or_group, _override_values(override)
        if schema.schema_key(key) in FOLDER_OR_HUB_KEYS:
            _check_marked_folders(key, values or [])
        if key == f"pipeline.{INHERITED}":
            raise SparseBertError(
                f"{arg}: pipeline.inherited is set by sparsebert (the keys this command line "
                "sets, which every step inherits); leave it out and set those keys instead."
            )
        if override.is_sweep_override() and schema.schema_key(key) in unnamed:
            what = (
                "names no job folder, so the sweep's jobs would share one folder"
                if schema.schema_key(key) in HASHED_UNNAMED
                else "does not change what a job computes (it is left out of a job's identity "
                "and of its folder name), so the sweep's jobs would all be one job in one folder"
            )
            raise SparseBertError(
                f"{arg}: {key} {what}. Run one sweep per value, each with its own sweep_name=."
            )
        if key in groups and override.value() is None and not override.is_delete():
            raise _group_needed(arg, key)
        group = key.removesuffix(".name")
        if group != key and group in groups:  # `mask.name=window` kept dense's window 0
            named = [v for v in values or [] if isinstance(v, str) and v in _options(group)]
            if named:
                raise SparseBertError(
                    f"{arg} renames the {group} but keeps the settings of the {group} option "
                    f"chosen (its defaults otherwise); choose the option itself: {group}="
                    f"{named[0]}."
                )
        if values == []:  # Hydra would launch no job and exit 0
            options = f" (the {key} options: {', '.join(_options(key))})" if key in groups else ""
            raise SparseBertError(
                f"the sweep has no job: {arg} expands to no value{options}. Check its spelling "
                "(`--dry-run` after the sweep lists the jobs it makes)."
            )
        if values is None:
            continue
        kind = leaf_types.get(schema.schema_key(key))
        for value in values:
            _check_container(arg, key, kind, value)
        if key.startswith("pipeline."):  # one step's overrides: checked as that step gets them
            for value in values:
                if isinstance(value, list):
                    try:
                        check_override_values([str(item) for item in value])
                    except SparseBertError as e:
                        raise SparseBertError(f"{arg}: {e}") from None
            continue
        if key in groups:
            options = _options(key)
            for value in values:
                if str(value) not in options:
                    close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
                    hint = f" Did you mean {key}={close[0]}?" if close else ""
                    raise SparseBertError(
                        f"{arg}: there is no {key} option {value!r}.{hint} The {key} options are "
                        f"{', '.join(options)} (conf/{key}/)."
                    )
            continue
        if kind not in _TYPE_NODES:
            continue
        node, words = _TYPE_NODES[kind]
        for value in values:
            if "${" in str(value):  # an interpolation: resolved later
                continue
            try:
                node(value=value)
            except ValidationError:
                raise SparseBertError(
                    f"{arg}: {key} takes {words}, not {value!r}; write e.g. "
                    f"{key}={_TYPE_EXAMPLES[kind]}."
                ) from None
    return sweeps


def _check_words(args: list[str]) -> None:
    """Refuse a word that is neither a flag, a flag's value nor key=value (`mask dense`), before
    Hydra answers "Error parsing override 'mask': missing EQUAL at '<EOF>'"."""
    groups = group_names() - {"hydra"}
    for i, arg in enumerate(args):
        before, after = args[i - 1] if i else None, args[i + 1] if i + 1 < len(args) else None
        if "=" in arg and not arg.split("=", 1)[0].lstrip("+~"):
            raise SparseBertError(
                f"'{arg}' has no key before '=': write key=value (trainer.max_steps=100) or "
                "group=option (mask=window), with no spaces around '='."
            )
        if arg.startswith(("-", "~")) or "=" in arg or before in schema.HYDRA_VALUE_FLAGS:
            continue  # a flag, a deletion (~key), key=value or a flag's value
        if arg in groups:
            options = _options(arg)
            hint = f" (did you mean {arg}={after}?)" if after in options else ""
            raise SparseBertError(
                f"'{arg}' has no value{hint}: a group is chosen as {arg}=<option>, with no spaces "
                f"around '=', one of {', '.join(options)} (conf/{arg}/)."
            )
        raise SparseBertError(
            f"'{arg}' is not an override: write key=value (trainer.max_steps=100) or "
            "group=option (mask=window), with no spaces around '='; `sparsebert <stage> --help` "
            "lists the groups and keys."
        )


def check_safe_overrides(args: list[str]) -> None:
    """Refuse, before Hydra creates any folder or runs any code, what the command line may not do:
    name a run folder that is not one safe folder name, or bring code (`_target_`, callbacks,
    another config tree)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    printing = [a for a in args if a.split("=", 1)[0] in ("-c", "--cfg")]
    if printing and schema.is_multirun(args):
        raise SparseBertError(
            f"{printing[0]} prints the config of one job, but -m asks for a sweep; drop -m (one "
            "value per key) to print a job's config, or replace --cfg with --dry-run to list "
            "the sweep's jobs."
        )
    _check_words(args)
    parser = OverridesParser.create()
    for arg in args:
        if arg.split("=", 1)[0] in ("-cd", "--config-dir", "-cp", "--config-path"):
            raise SparseBertError(
                f"{arg}: sparsebert composes its own config tree only (a foreign one could name "
                "code to run); pass overrides (key=value, group=option) instead."
            )
        if arg.startswith("-") or "=" not in arg:
            continue
        override = _parse_override(parser, arg)
        key = override.key_or_group
        if key.split(".")[:2] in (["hydra", "run"], ["hydra", "sweep"]):
            raise runs.FolderRefused(
                f"{arg}: run folders are <paths.runs_dir>/<stage>/<run_id> (a sweep's: "
                "<paths.runs_dir>/<stage>/multirun/<sweep_name>); set paths.runs_dir=, run_id= "
                "or sweep_name= instead."
            )
        if key.split(".")[:3] == ["hydra", "sweeper", "params"]:  # Hydra's traceback
            raise SparseBertError(
                f"{arg}: a sweep's values go on the command line with -m (sparsebert <stage> -m "
                "seed=0,1 mask=dense,window), or in an experiment preset (conf/experiment/)."
            )
        if key.startswith("hydra.callbacks") or "_target_" in key.split("."):
            raise SparseBertError(
                f"{arg}: callbacks and `_target_` cannot be set from the command line (they run "
                "code); the project's own callback stays in conf/hydra/default.yaml."
            )
        if key not in (*runs.NAME_KEYS, "paths.runs_dir") or override.value() is None:
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.value()]
        )
        for value in values:
            if key == "paths.runs_dir":
                runs.check_runs_dir(value)
                continue
            if "${" in str(value):
                raise runs.FolderRefused(
                    f"{key}={value}: {key} takes a plain name, not an interpolation, since it "
                    f"becomes a folder name and is recorded; use e.g. {key}=my-run-1."
                )
            runs.check_name(key, value)
        if key == "run_id" and schema.is_multirun(args):
            raise SparseBertError(
                f"{arg}: run_id names one run's folder, but -m makes a sweep, whose jobs are "
                f"named by their overrides under <paths.runs_dir>/<stage>/{runs.MULTIRUN_DIR}/"
                "<sweep_name>/; drop run_id (sweep_name= names the sweep's folder)."
            )
        if key == "sweep_name" and not schema.is_multirun(args):
            raise SparseBertError(
                f"{arg}: sweep_name names the folder of a sweep (-m), but this is one run, in "
                "<paths.runs_dir>/<stage>/<run_id>; add -m for a sweep, or name the run with "
                "run_id= instead."
            )
