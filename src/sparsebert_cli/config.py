"""The structured-config schema of every stage and where the config tree lives.

One schema (`RunConfig`) serves all stages, so a typo or a wrong type fails at composition with
Hydra's message. Group schemas live beside their mechanism (masks/, data/, training/); this module
only assembles them. Torch-free: importing it must stay instant.
"""

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from sparsebert_cli.data.config import DataConfig, TaskConfig
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.training.config import TrainerConfig

STAGES = ("search", "pretrain", "finetune", "evaluate", "pipeline")
NORM_POSITIONS = ("post", "pre")  # model.norm: where the LayerNorms sit (layer_norm.py)
POSITION_INITS = ("learned", "sinusoidal")  # model.position_init (modeling.init_positions)
# Config fields that name files or folders: `~` and environment variables in them are expanded.
PATH_FIELDS = (
    "task.glue_dir", "task.data_dir", "task.data_files", "data.files", "model.name_or_path",
    "paths.runs_dir", "paths.cache_dir",
)  # fmt: skip


@dataclass
class ModelConfig:
    preset: str = "tiny"  # tiny | mini | small | base | hf (a Hugging Face checkpoint)
    name_or_path: str | None = None  # hub name or local folder (preset=hf)
    from_run: str | None = None  # a pretrain/finetune run dir, or "latest"
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
    attention_dropout: float = 0.1
    attention_backend: str = "auto"  # auto | masked | sdpa | block_sparse | flex
    block_size: int = 32  # block_sparse / flex block size


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb (metrics always go to metrics.jsonl in the run folder)
    project: str = "sparsebert"
    entity: str | None = None
    mode: str = "offline"  # online | offline | disabled
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


@dataclass
class RunConfig:
    stage: str = "pretrain"
    seed: int = 0
    offline: bool = False  # set HF_HUB_OFFLINE / HF_DATASETS_OFFLINE before anything is imported
    resume: str = "auto"  # auto | never
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


def register_schemas() -> None:
    """Store the schema under `run_schema`; every primary config names it first in its defaults."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def conf_dir() -> Path:
    """The config tree: inside the installed package (wheel) or the checkout's top-level conf/."""
    packaged = Path(str(resources.files("sparsebert_cli"))) / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


def expand_path(value: str) -> str:
    """`~`, `$VAR` and `${VAR}` expanded: a path written in a config file, or quoted on the command
    line (Hydra's override grammar refuses an unquoted `~`; an unquoted `$HOME/...` is expanded
    by the shell already)."""
    return os.path.expandvars(os.path.expanduser(value))


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
