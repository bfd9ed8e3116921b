"""Shared fixtures and helpers: every test runs offline, with its own runs and cache folders;
`cli_env` is the environment of a CLI subprocess, `compose_cfg` a stage's composed config."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "offline",
}
# Before any test module imports datasets or huggingface_hub: they read offline mode once, at
# import, and a process imported online spends ~20 s retrying the hub on each miss.
os.environ.update(OFFLINE)
# Several pytest-xdist workers on a few cores: one torch thread per process (each worker and the
# CLI subprocesses it starts), or the threads oversubscribe the cores and every test runs slower
# (the in-process long-sequence tests: 101 s with torch's default against 71 s, 2 workers on
# 2 cores). It changes no result: num_threads is not part of any config hash.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh launch directory: runs/ and the cache live under it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARSEBERT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("SPARSEBERT_CACHE_DIR", str(ROOT / ".cache" / "test-data"))
    return tmp_path


def sparsebert(
    *args: str, cwd: Path, check: bool = True, env: dict | None = None, timeout: int = 600
):
    """Run the real CLI in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "sparsebert_cli.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"sparsebert {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def cli_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment of a CLI subprocess launched in `root`: its own runs folder, offline, 1 thread.

    One torch thread per process: on 2 cores the default oversubscribes and makes each run
    several times slower; it changes no result (num_threads is not part of the config hash).
    """
    return {
        "SPARSEBERT_RUNS_DIR": str(root / "runs"),
        "SPARSEBERT_CACHE_DIR": str(ROOT / ".cache" / "test-data"),
        **OFFLINE,
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def compose_cfg(stage: str, *overrides: str):
    """The resolved config `sparsebert <stage> <overrides>` composes (aliases as the CLI takes)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sparsebert_cli.config import (
        HYDRA_VERSION_BASE,
        conf_dir,
        register_hydra_extensions,
        rewrite_aliases,
    )

    register_hydra_extensions()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=HYDRA_VERSION_BASE):
        cfg = compose(config_name=stage, overrides=rewrite_aliases(list(overrides)))
    OmegaConf.resolve(cfg)
    return cfg


def tiny_model(**overrides):
    """A 2-layer, 16-hidden, 2-head ModelConfig without dropout (in-process model tests)."""
    from sparsebert_cli.config import ModelConfig

    fields = dict(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32)
    return ModelConfig(**{**fields, "dropout": 0.0, "attention_dropout": 0.0, **overrides})


def dam_search_step(cfg, backend: str, frozen: bool = False, alpha=None) -> tuple:
    """One training forward and backward of a tiny model (2 layers, 2 heads, tiles of 32)
    searching the DAM of mask config `cfg` at n = cfg.seq_len, α set to `alpha` if given; the
    Gumbel noise and the weights seeded alike for every backend, a padded example (over part of
    a tile). frozen: the encoder takes no gradient (the search protocol's mask.encoder_lr=0).
    Returns the loss and every parameter's gradient."""
    import torch

    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import build_pretraining_model

    n = cfg.seq_len
    model_cfg = tiny_model(attention_backend=backend, block_size=32)
    model_cfg.max_position_embeddings = n
    torch.manual_seed(0)
    source = MaskSource.from_config(cfg, heads=2, layers=2, n=n, block_size=32)
    if alpha is not None:
        with torch.no_grad():
            source.dam.alpha.copy_(alpha.expand_as(source.dam.alpha))
    model = build_pretraining_model(model_cfg, source, vocab_size=50, nsp=False).train()
    model.bert.requires_grad_(not frozen)
    ids = torch.randint(5, 50, (2, n), generator=torch.Generator().manual_seed(1))
    attention = torch.ones(2, n, dtype=torch.long)
    attention[1, n - 70 :] = 0
    positions = torch.arange(0, n, 7)[None].expand(2, -1)
    out = model(ids, attention, masked_lm_positions=positions, masked_lm_ids=ids[:, ::7],
                masked_lm_weights=torch.ones(positions.shape))  # fmt: skip
    out.loss.backward()
    return out.loss.detach(), {k: p.grad for k, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded WordPiece tokenizer (in-process data tests)."""
    from sparsebert_cli.data.tokenizer import embedded_tokenizer_folder, tokenizer_from_folder

    return tokenizer_from_folder(embedded_tokenizer_folder())


def task_config(name: str, **overrides):
    """conf/task/<name>.yaml over the TaskConfig schema, with `overrides` merged on top."""
    from omegaconf import OmegaConf

    from sparsebert_cli.config import conf_dir
    from sparsebert_cli.data.config import TaskConfig

    config = OmegaConf.structured(TaskConfig)
    return OmegaConf.merge(config, OmegaConf.load(conf_dir() / "task" / f"{name}.yaml"), overrides)


def data_config(**overrides):
    """The DataConfig schema's defaults with `overrides` merged on top."""
    from omegaconf import OmegaConf

    from sparsebert_cli.data.config import DataConfig

    return OmegaConf.merge(OmegaConf.structured(DataConfig), overrides)
