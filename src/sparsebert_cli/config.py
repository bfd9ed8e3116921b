"""The structured-config schema of every stage and where the config tree lives.

One schema (`RunConfig`) serves the stages, so a typo or a wrong type fails at composition with
Hydra's message; `evaluate`'s is `RunConfig` narrowed to the keys it reads (`stages.READS`), so its
config holds nothing it ignores. Group schemas live beside their mechanism (masks/, data/,
training/); this module only assembles them. Torch-free: importing it must stay instant.
"""

import dataclasses
import hashlib
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from sparsebert_cli.data.config import DataConfig, TaskConfig
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.stages import NOT_HASHED, READS, UNNAMED_TRAINER
from sparsebert_cli.training.config import TrainerConfig
from sparsebert_cli.user_paths import expand_path, user_path

STAGES = ("search", "pretrain", "finetune", "evaluate", "pipeline")
# attention/interface.py implements them, attention/capabilities.py says what each can do; kept
# here, torch-free, so `validate` stays quick.
BACKENDS = ("auto", "masked", "sdpa", "block_sparse", "flex")
LOGGERS = ("none", "wandb")
LOGGER_MODES = ("online", "offline", "disabled")
RESUME_MODES = ("auto", "never")
NORM_POSITIONS = ("post", "pre")  # model.norm: where the LayerNorms sit (layer_norm.py)
NORM_FIELD = "norm_position"  # the config.json field that records model.norm (post if absent)
POSITION_INITS = ("learned", "sinusoidal")  # model.position_init (modeling.init_positions)
# Config fields that name files or folders: `~` and environment variables in them are expanded.
PATH_FIELDS = (
    "task.glue_dir", "task.data_dir", "task.data_files", "data.files", "model.name_or_path",
    "paths.runs_dir", "paths.cache_dir", "model.from_run", "mask.from_run", "data.tokenizer",
)  # fmt: skip


@dataclass
class ModelConfig:
    # The weights to start from: a hub name, a local folder or embedded:minilm (its sizes are
    # read from it), or a pretrain/finetune run dir (or "latest"); neither: a new model of the
    # sizes below (conf/model/{tiny,mini,small,base}.yaml).
    name_or_path: str | None = None
    from_run: str | None = None
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    norm: str = "post"  # post (BERT, Hugging Face) | pre (pre-LN, layer_norm.py); from the checkpoint when loading one
    position_init: str = (
        "learned"  # learned (BERT: N(0, 0.02²)) | sinusoidal (scaled); new models only
    )
    dropout: float = 0.1
    attention_dropout: float = 0.1  # block_sparse/diagonal round it to 2⁻¹⁶ (attention/dropout.py)
    attention_backend: str = "auto"  # one of BACKENDS
    block_size: int = 32  # block_sparse / flex block size


# ModelConfig's size fields and the BertConfig attributes that hold them.
SIZE_FIELDS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
}
# What a model loaded from weights (model.from / model.name_or_path) takes from its checkpoint,
# whatever these fields say (modeling.bert_config).
CHECKPOINT_FIELDS = (*SIZE_FIELDS, "norm", "position_init")


@dataclass
class LoggerConfig:
    name: str = "none"  # one of LOGGERS (metrics always go to metrics.jsonl in the run folder)
    project: str = "sparsebert"
    entity: str | None = None
    mode: str = "offline"  # one of LOGGER_MODES
    group: str | None = None  # default: the sweep folder, so the runs of one sweep are grouped
    tags: list[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    runs_dir: str = "runs"
    cache_dir: str = ".cache/sparsebert"


@dataclass
class PipelineConfig:
    # Overrides applied to one step only, e.g. "pipeline.search=['trainer.max_steps=50']".
    search: list[str] = field(default_factory=list)
    pretrain: list[str] = field(default_factory=list)
    finetune: list[str] = field(default_factory=list)
    evaluate: list[str] = field(default_factory=list)
    # Set by sparsebert, not on the command line: the keys the command line sets, which every
    # step inherits as typed (`stages.pipeline.inherited_overrides`). Part of the pipeline's
    # identity: `trainer.lr=1e-3`, the pipeline's own default, still gives its finetune step that
    # rate instead of finetune's, so it is another pipeline than one without it.
    inherited: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    stage: str = "pretrain"
    seed: int = 0
    offline: bool = False  # set HF_HUB_OFFLINE / HF_DATASETS_OFFLINE before anything is imported
    resume: str = "auto"  # one of RESUME_MODES
    run_id: str = "${now:%Y%m%d-%H%M%S-%f}"
    sweep_name: str = "default"  # multirun folder: <runs_dir>/<stage>/multirun/<sweep_name>
    paths: PathsConfig = field(default_factory=PathsConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def unnamed_overrides() -> list[str]:
    """The override keys a sweep job's folder name leaves out (hydra.job.config.override_dirname
    .exclude_keys, through the `sb_unnamed` resolver): the settings the content hash leaves out,
    so a sweep rerun with other launch settings (threads, W&B, another runs folder) finds its
    finished jobs, and the launcher's width. A pipeline's per-step overrides name the folder: they
    are hashed."""
    hints = typing.get_type_hints(RunConfig)
    keys = ["hydra.launcher.n_jobs", *(f"trainer.{key}" for key in UNNAMED_TRAINER)]
    for name in NOT_HASHED:
        if name == "pipeline":
            continue
        keys.append(name)
        if dataclasses.is_dataclass(hints[name]):
            keys += [f"{name}.{f.name}" for f in dataclasses.fields(hints[name])]
    return keys


@dataclass(frozen=True)
class Range:
    """The values a number may take: [low, high] with either end open or absent (None)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if value != value or value in (float("inf"), float("-inf")):  # NaN, ±inf
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        def number(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.low is None and self.high is None:
            return "a finite number"
        if self.high is None:
            return f"{'>' if self.low_open else '≥'} {number(self.low)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{number(self.low)}, {number(self.high)}{right}"


AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, low_open=True)
FRACTION = Range(0, 1, high_open=True)  # [0, 1)
OPEN_FRACTION = Range(0, 1, low_open=True, high_open=True)  # (0, 1)
SEED = Range(0, 2**32 - 1)  # numpy's and Python's generators take seeds below 2**32
# Every numeric setting and its range: the one place `validation` checks them (a null value of an
# optional setting is allowed). Bounds that depend on another key are combinations there.
RANGES: dict[str, Range] = {
    "seed": SEED,
    "mask.window": AT_LEAST_0,
    "mask.stride": AT_LEAST_0,
    "mask.c": AT_LEAST_0,
    "mask.global_tokens": AT_LEAST_0,
    "mask.random_keys": AT_LEAST_0,
    "mask.density": Range(0, 1, low_open=True),
    "mask.seed": SEED,
    "mask.lam": AT_LEAST_0,
    "mask.tau": POSITIVE,
    "mask.tau_final": POSITIVE,
    "mask.init": Range(),
    "mask.lr": POSITIVE,
    "mask.seq_len": AT_LEAST_1,
    "mask.trace_every": AT_LEAST_1,
    "mask.target_sparsity": FRACTION,
    "mask.target_warmup": AT_LEAST_0,
    "mask.lagrangian_lr": POSITIVE,
    "mask.head_warmup": AT_LEAST_0,
    "mask.encoder_lr": AT_LEAST_0,  # 0 freezes the encoder
    "model.hidden_size": AT_LEAST_1,
    "model.num_layers": AT_LEAST_1,
    "model.num_heads": AT_LEAST_1,
    "model.intermediate_size": AT_LEAST_1,
    "model.max_position_embeddings": Range(8),
    "model.dropout": FRACTION,
    "model.attention_dropout": FRACTION,
    "model.block_size": AT_LEAST_1,
    "data.sentences_per_document": AT_LEAST_1,
    "data.max_documents": AT_LEAST_1,
    "data.vocab_size": AT_LEAST_1,
    "data.seq_len": Range(8),  # [CLS] A [SEP] B [SEP] with room for both segments
    "data.mlm_probability": OPEN_FRACTION,
    "data.max_predictions_per_seq": AT_LEAST_1,
    "data.short_seq_prob": Range(0, 1),
    "data.dupe_factor": AT_LEAST_1,
    "data.eval_fraction": OPEN_FRACTION,
    "data.num_proc": AT_LEAST_1,
    "task.num_labels": AT_LEAST_1,
    "task.seq_len": Range(4),  # [CLS] A [SEP] B [SEP] with at least one token of text
    "task.fold": AT_LEAST_0,
    "task.num_folds": Range(2),
    "task.doc_stride": AT_LEAST_1,
    "task.max_query_length": AT_LEAST_1,
    "task.max_answer_length": AT_LEAST_1,
    "task.n_best": AT_LEAST_1,
    "task.null_score_threshold": Range(),
    "trainer.max_steps": AT_LEAST_0,
    "trainer.epochs": AT_LEAST_0,
    "trainer.batch_size": AT_LEAST_1,
    "trainer.grad_accum": AT_LEAST_1,
    "trainer.eval_batch_size": AT_LEAST_1,
    "trainer.lr": POSITIVE,
    "trainer.weight_decay": AT_LEAST_0,
    "trainer.betas": FRACTION,  # each of the two
    "trainer.warmup": FRACTION,
    "trainer.poly_power": POSITIVE,
    "trainer.clip_grad": AT_LEAST_0,
    "trainer.num_threads": AT_LEAST_0,
    "trainer.eval_every": AT_LEAST_0,
    "trainer.ckpt_every": AT_LEAST_0,
    "trainer.log_every": AT_LEAST_1,
    "trainer.nproc_per_node": AT_LEAST_1,
}


def narrowed(schema: type, keys: tuple[str, ...], prefix: str = "", name: str = "") -> type:
    """`schema` with only the fields `keys` name (dotted; a listed group keeps all its fields),
    each with its type and default: a stage's schema derived from `RunConfig`, not declared again.
    The classes are named `<name><schema class>` (e.g. EvaluateModelConfig)."""
    hints = typing.get_type_hints(schema)
    kept = []
    for f in dataclasses.fields(schema):
        key, kind = f"{prefix}{f.name}", hints[f.name]
        if key in keys:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TypeError(f"{key} has no default: a narrowed schema keeps every default")
            default = (
                field(default_factory=f.default_factory)
                if f.default is dataclasses.MISSING
                else field(default=f.default)
            )
            kept.append((f.name, kind, default))
        elif any(k.startswith(f"{key}.") for k in keys):
            group = narrowed(kind, keys, f"{key}.", name)
            kept.append((f.name, group, field(default_factory=group)))
    return dataclasses.make_dataclass(f"{name}{schema.__name__}", kept)


def register_schemas() -> None:
    """Store the schemas the primary configs name first in their defaults: `run_schema` (the
    training stages and the pipeline) and `evaluate_schema` (the keys evaluate reads)."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(
        name="evaluate_schema", node=narrowed(RunConfig, READS["evaluate"], name="Evaluate")
    )


# `from` is a Python keyword, so the schema spells it `from_run`; the CLI accepts both.
_ALIASES = {"mask.from": "mask.from_run", "model.from": "model.from_run"}


SLUG_LENGTH = 120  # the longest sweep job folder name (file systems take 255 bytes)
# A path inside an override value (model.from=/runs/pretrain/x, data.files=[/a/b.txt,...]).
_PATH_IN_VALUE = re.compile(r"[^,=\[\]{}]*/[^,=\[\]{}]*")


def sb_slug(override_dirname: str) -> str:
    """A filesystem-safe, deterministic folder name for one sweep job's override combination.

    A path in a value is shortened to its last part, so the swept values after it stay in the
    name (`model.from_run=pipeline-88a2…,seed=1,task=mrpc`, not 71 characters of the path);
    a name changed or cut gets a digest of the full combination, so two jobs never share one.
    """
    if not override_dirname:
        return "default"
    short = _PATH_IN_VALUE.sub(lambda m: m[0].rstrip("/").rsplit("/", 1)[-1], override_dirname)
    slug = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", short)
    if len(slug) > SLUG_LENGTH or slug != override_dirname:
        digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:8]
        slug = f"{slug[: SLUG_LENGTH - 9]}-{digest}"
    return slug


def register_hydra_extensions() -> None:
    """The config schema and the `sb_slug`, `sb_path` and `sb_unnamed` resolvers, needed before
    any composition."""
    register_schemas()
    if not OmegaConf.has_resolver("sb_slug"):
        OmegaConf.register_new_resolver("sb_slug", sb_slug)
    if not OmegaConf.has_resolver("sb_path"):
        # "" (SPARSEBERT_RUNS_DIR set but empty) is the launch folder, as Path("") is for the
        # stages, not the file system's root under "/<stage>/<run_id>"
        OmegaConf.register_new_resolver("sb_path", lambda value: expand_path(value) or ".")
    if not OmegaConf.has_resolver("sb_unnamed"):
        OmegaConf.register_new_resolver("sb_unnamed", unnamed_overrides)


# Hydra's flags for a sweep: the command line's jobs are the product of its values.
MULTIRUN_FLAGS = ("-m", "--multirun")
# Hydra's flags that take the next word as their value (`--cfg job`, `--info searchpath`).
HYDRA_VALUE_FLAGS = (
    "-c", "--cfg", "-p", "--package", "-i", "--info", "-cn", "--config-name", "-cp",
    "--config-path", "-cd", "--config-dir", "-sc", "--shell-completion", "--experimental-rerun",
)  # fmt: skip


def is_multirun(args: list[str]) -> bool:
    return any(arg in MULTIRUN_FLAGS for arg in args)


def typed_overrides(hydra_cfg: DictConfig) -> list[str]:
    """A job's command-line overrides as typed (Hydra's overrides.task, unresolved: an item
    holding `${D}` would be resolved, and fail, on reading)."""
    return [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]


def override_key(override: str) -> str:
    """The config key an override sets: `+mask.lam=1e-3` → `mask.lam`, `mask=dam` → `mask`."""
    return override.split("=", 1)[0].lstrip("+~")


def schema_key(key: str) -> str:
    """A key as the schema spells it: `mask.from` → `mask.from_run` (and model.from)."""
    return _ALIASES.get(key, key)


# Mappings set whole on the command line (`task.data_files={train: a.csv}`): Hydra merges a
# mapping into the composed one, which refuses keys it does not have yet; `++` sets it.
MAPPING_FIELDS = ("task.data_files",)


def rewrite_aliases(args: list[str]) -> list[str]:
    """`mask.from=` → `mask.from_run=` (and model.from); `task.data_files=` → `++task.data_files=`
    (MAPPING_FIELDS); and a value starting with `~/` expanded to the home folder, as a shell does
    for an assignment (Hydra's grammar refuses a bare `~`)."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep:
            key = schema_key(key)
            key = f"++{key}" if key in MAPPING_FIELDS else key
            arg = f"{key}={value}"
        if sep and not key.startswith("-") and (value == "~" or value.startswith("~/")):
            arg = f"{key}={user_path(value)}"
        out.append(arg)
    return out


HYDRA_VERSION_BASE = "1.3"  # the Hydra defaults every composition of conf/ asks for


def conf_dir() -> Path:
    """The config tree: inside the installed package (wheel) or the checkout's top-level conf/."""
    packaged = Path(str(resources.files("sparsebert_cli"))) / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


def expand_path_fields(cfg: DictConfig) -> None:
    """Expand every PATH_FIELDS value of a composed config in place (strings, lists, dicts)."""
    for key in PATH_FIELDS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str):
            expanded = expand_path(value)
        elif OmegaConf.is_list(value):
            expanded = [expand_path(str(v)) for v in value]
        elif OmegaConf.is_dict(value):
            expanded = {k: expand_path(str(v)) for k, v in value.items()}
        else:
            continue
        OmegaConf.update(cfg, key, expanded, merge=False)
