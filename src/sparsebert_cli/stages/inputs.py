"""What a stage consumes: upstream runs resolved by reference, and the pre-training data.

Upstream references (`mask.from=`, `model.from=`) are resolved here, once, and recorded as
inputs in the run's manifest; only completed runs of the right stage are accepted.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.stages import UPSTREAM, reads


def cache_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.cache_dir)


def references(cfg: DictConfig) -> dict[str, str]:
    """The upstream references the job uses, by key: `model.from`, and `mask.from` when the
    mask is `from_run` (as written: "latest" or a folder)."""
    found = {}
    for key in UPSTREAM.get(cfg.stage, {}):
        ref = OmegaConf.select(cfg, key, throw_on_missing=False)
        if ref and (key != "mask.from_run" or cfg.mask.name == "from_run"):
            found[key] = ref
    return found


def resolve_upstream(cfg: DictConfig) -> dict[str, Path]:
    """The completed runs that `model.from` and `mask.from` name (`latest` included), by key."""
    kinds, runs_dir = UPSTREAM.get(cfg.stage, {}), Path(cfg.paths.runs_dir)
    return {key: runs.resolve(kinds[key], ref, runs_dir) for key, ref in references(cfg).items()}


def resolve_references(cfg: DictConfig) -> list[str]:
    """Turn `mask.from_run` and `model.from_run` ("latest" or a path) into completed run folders,
    in place, before the job is hashed or any data is loaded; returns what each resolved to."""
    said = []
    for key, found in resolve_upstream(cfg).items():
        group, field = key.split(".")
        ref = cfg[group][field]
        cfg[group][field] = str(found)
        if ref != str(found):
            said.append(f"{group}.from={ref} → {found}")
    return said


def resolve_mask(cfg: DictConfig, run: runs.Run) -> DictConfig:
    """The mask config with `from_run` turned into a completed search run's folder."""
    mask_cfg = OmegaConf.create(OmegaConf.to_container(cfg.mask, resolve=True))
    if mask_cfg.name == "from_run":
        search_dir = runs.resolve("search", mask_cfg.from_run, Path(cfg.paths.runs_dir))
        run.add_input("mask", search_dir)
        mask_cfg.from_run = str(search_dir)
    return mask_cfg


def upstream_model(cfg: DictConfig, run: runs.Run, kind: str) -> Path | None:
    """The model folder of the `kind` run that `model.from_run` names (None when not set); the
    model is built from this folder (`init_from`), never from the unresolved reference."""
    if not cfg.model.from_run:
        return None
    run_dir = runs.resolve(kind, cfg.model.from_run, Path(cfg.paths.runs_dir))
    run.add_input("model", run_dir)
    model_dir = runs.layout(run_dir).model
    if not model_dir.is_dir():
        raise SparseBertError(
            f"{run_dir} is completed but has no model at {model_dir}; rerun that stage."
        )
    return model_dir


def sequence_lengths(stage: str) -> list[str]:
    """The sequence-length keys `stage` reads (a model's positions must cover them)."""
    return [key for key in ("data.seq_len", "task.seq_len") if reads(stage, key)]


def check_positions(cfg: DictConfig, folder: Path) -> None:
    """The stage's sequences fit the positions of the model it loads from `folder` (model.from's
    or model.name_or_path's): its config, not model.max_position_embeddings, sets them."""
    from sparsebert_cli.pretrained import read_bert_config

    positions = read_bert_config(folder).max_position_embeddings
    for key in sequence_lengths(cfg.stage):
        n = OmegaConf.select(cfg, key)
        if n > positions:
            raise SparseBertError(
                f"{key}={n} is longer than the {positions} positions of the model in {folder}; "
                f"set {key}={positions} or less, or pre-train a model with "
                f"model.max_position_embeddings ≥ {n}."
            )


def weights_folder(cfg: DictConfig, init_from: Path | None) -> Path | None:
    """The folder the model's weights (and so its tokenizer) come from, if any. A hub model's
    positions are checked here, once downloaded (`preflight` checked a local folder's)."""
    if init_from is not None or not cfg.model.name_or_path:
        return init_from
    from sparsebert_cli.pretrained import local_pretrained, resolve_pretrained

    folder = local_pretrained(cfg.model.name_or_path)
    if folder is None:
        folder = resolve_pretrained(cfg.model.name_or_path)
        check_positions(cfg, folder)
    return folder


def pretraining_data(cfg: DictConfig, tokenizer):
    """Train/eval splits of MLM(+NSP) examples (cached) and their collate function."""
    from sparsebert_cli.data.pretraining import build_pretraining_splits, collate_pretraining
    from sparsebert_cli.progress import waiting

    with waiting(f"pre-training data data={cfg.data.name}: load, tokenize, cache"):
        splits = build_pretraining_splits(cfg.data, tokenizer, cfg.seed, cache_dir(cfg))
    return splits, collate_pretraining


def model_start(cfg: DictConfig, run: runs.Run) -> tuple:
    """The model folder a training stage starts from (None: a new model) and its tokenizer."""
    from sparsebert_cli.data.tokenizer import load_tokenizer

    init_from = upstream_model(cfg, run, "pretrain")
    return init_from, load_tokenizer(
        cfg.data, cache_dir(cfg), source=weights_folder(cfg, init_from)
    )


def pretraining_start(cfg: DictConfig, run: runs.Run) -> tuple:
    """What search and pretrain start from: `model_start`'s model folder and tokenizer, and the
    pre-training splits with their collate."""
    init_from, tokenizer = model_start(cfg, run)
    return init_from, tokenizer, *pretraining_data(cfg, tokenizer)


def pretraining_model(cfg: DictConfig, source, tokenizer, init_from: Path | None):
    """The pre-training model of `cfg.model` with the mask `source`, sized to the tokenizer's
    ids, its weights from `init_from` when given."""
    from sparsebert_cli.data.tokenizer import id_bound
    from sparsebert_cli.modeling import build_pretraining_model

    return build_pretraining_model(
        cfg.model, source, vocab_size=id_bound(tokenizer), nsp=cfg.data.nsp, init_from=init_from
    )


def mask_sparsity(model) -> dict[str, float]:
    """The model's mask's `sparsity_metrics`: percent of attention entries it removes, its n."""
    from sparsebert_cli.masks.stats import sparsity_metrics

    return sparsity_metrics(model.sparse_mask.binarized())
