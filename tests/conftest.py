"""Shared fixtures: every test runs offline, with its own runs and cache folders."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("WANDB_MODE", "offline")


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
