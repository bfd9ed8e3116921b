"""Security: nothing is unpickled (a planted malicious pickle is refused without running), upstream
references cannot be steered outside the runs folder, and secrets are never written anywhere."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import sparsebert
from robust_helpers import NO_SCALER, TINY, assert_clean_error

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.artifact import MASK_FILE, META_FILE, load_mask, save_mask
from sparsebert_cli.training import checkpoint


class _Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"optimizer": _Payload(marker), "scheduler": {}}, path)
    return path


def test_the_planted_pickle_is_live(tmp_path):
    """Control: an unguarded torch.load (in a throwaway process) does run the payload."""
    marker = tmp_path / "pwned"
    bad = plant_pickle(tmp_path / "evil.pt", marker)
    code = f"import torch; torch.load({str(bad)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert marker.exists()


def test_malicious_optimiser_state_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    folder = checkpoint.save_checkpoint(
        tmp_path / "ckpt", 2, model, optimizer, scheduler, NO_SCALER, {}
    )
    plant_pickle(folder / "training_state.pt", marker)
    with pytest.raises(SparseBertError, match="refuses to unpickle"):
        checkpoint.load_checkpoint(folder, model, optimizer, scheduler, NO_SCALER)
    assert not marker.exists()


def test_a_pickle_in_place_of_a_mask_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    save_mask(tmp_path, torch.ones(1, 2, 8, 8, dtype=torch.bool), {"kind": "dam_u"})
    plant_pickle(tmp_path / MASK_FILE, marker)
    with pytest.raises(SparseBertError, match="sha256 differs"):
        load_mask(tmp_path)
    # Even with mask.json rewritten to the pickle's hash, it is read as safetensors only.
    import hashlib
    import json

    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["sha256"] = hashlib.sha256((tmp_path / MASK_FILE).read_bytes()).hexdigest()
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(SparseBertError, match="not a valid safetensors file"):
        load_mask(tmp_path)
    assert not marker.exists()


def test_a_pickled_hugging_face_checkpoint_is_refused_without_running(tmp_path):
    """A model folder with only pytorch_model.bin (pickle): transformers reads it weights-only."""
    from omegaconf import OmegaConf
    from transformers import BertConfig

    from sparsebert_cli.config import RunConfig
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import build_task_model

    marker = tmp_path / "pwned"
    folder = tmp_path / "model"
    BertConfig(
        vocab_size=100, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
        intermediate_size=64,
    ).save_pretrained(folder)  # fmt: skip
    torch.save(_Payload(marker), folder / "pytorch_model.bin")
    model_cfg = OmegaConf.structured(RunConfig).model
    model_cfg.name_or_path = str(folder)
    with pytest.raises(Exception) as info:
        build_task_model(model_cfg, MaskSource("dense"), 2, "classification", None, 100)
    assert "weights_only" in str(info.value) or "Unsupported global" in str(info.value)
    assert not marker.exists()


@pytest.mark.slow
def test_resume_refuses_a_planted_pickle_from_the_cli(workdir):
    args = ("pretrain", *TINY, "trainer.max_steps=2", "trainer.ckpt_every=1", "run_id=victim")
    sparsebert(*args, cwd=workdir)
    run_dir = workdir / "runs" / "pretrain" / "victim"
    # As if the run had been killed after its last checkpoint, which someone then replaced.
    manifest = runs.load_manifest(run_dir)
    runs.atomic_write_json(run_dir / runs.MANIFEST, {**manifest, "status": "running"})
    marker = workdir / "pwned"
    plant_pickle(run_dir / "checkpoints" / "step-00000002" / "training_state.pt", marker)
    proc = sparsebert(*args, cwd=workdir, check=False)
    assert_clean_error(proc, "step-00000002 holds a training_state.pt", "refuses to unpickle")
    assert not marker.exists()


# --- references cannot escape the runs folder through what lies inside it ----------------------------


def _completed_search(folder: Path, finished_at: float) -> Path:
    save_mask(folder / "artifacts", torch.ones(1, 2, 32, 32, dtype=torch.bool), {"kind": "dam_u"})
    runs.atomic_write_json(
        folder / runs.MANIFEST,
        {"stage": "search", "status": "completed", "finished_at": finished_at},
    )
    return folder


def test_latest_ignores_a_symlink_leading_outside_the_runs_folder(tmp_path):
    root = tmp_path / "runs"
    outside = _completed_search(tmp_path / "elsewhere" / "run", finished_at=2e9)
    (root / "search").mkdir(parents=True)
    (root / "search" / "planted").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SparseBertError, match="no completed 'search' run"):
        runs.resolve("search", "latest", root)
    inside = _completed_search(root / "search" / "real", finished_at=1.0)
    assert runs.resolve("search", "latest", root) == inside.resolve()
    # Given explicitly (on the command line), an outside folder is the user's choice.
    assert runs.resolve("search", str(outside), root) == outside.resolve()


def test_a_manifest_naming_an_outside_folder_is_not_followed(tmp_path):
    """The report reads upstream runs from manifests; an outside run_dir there is ignored."""
    from sparsebert_cli.reporting.records import collect_runs

    root = tmp_path / "runs"
    outside = _completed_search(tmp_path / "elsewhere", finished_at=1.0)
    folder = root / "finetune" / "r"
    folder.mkdir(parents=True)
    runs.atomic_write_json(folder / runs.CONFIG, {"stage": "finetune", "seed": 0})  # JSON is YAML
    runs.atomic_write_json(
        folder / runs.MANIFEST,
        {"stage": "finetune", "status": "failed", "inputs": {"mask": {"run_dir": str(outside)}}},
    )
    records, warnings = collect_runs([root])
    assert records[0].sparsity is None
    assert warnings == [
        f"{folder.resolve()}: ignored input 'mask' at {outside}, which lies outside the runs "
        f"folder {root.resolve()}."
    ]


@pytest.mark.slow
def test_cli_latest_refuses_a_planted_outside_run(workdir):
    outside = _completed_search(workdir / "elsewhere", finished_at=2e9)
    (workdir / "runs" / "search").mkdir(parents=True)
    (workdir / "runs" / "search" / "planted").symlink_to(outside, target_is_directory=True)
    proc = sparsebert(
        "pretrain", *TINY, "mask=from_run", "mask.from=latest", cwd=workdir, check=False
    )
    assert_clean_error(proc, "error: no completed 'search' run under")


# --- secrets ----------------------------------------------------------------------------------------

SECRETS = {"WANDB_API_KEY": "wandb-secret-7f3a9c1e5b", "HF_TOKEN": "hf_secretTokenQ8x2Lm4P"}


def test_secrets_are_redacted_from_the_wandb_config(monkeypatch):
    from sparsebert_cli.runs import redact

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    config = {"logger": {"entity": SECRETS["WANDB_API_KEY"], "tags": [SECRETS["HF_TOKEN"], "x"]}}
    assert redact(config) == {"logger": {"entity": "<redacted>", "tags": ["<redacted>", "x"]}}


@pytest.mark.slow
def test_secrets_never_reach_any_file_or_output(workdir):
    args = ("pretrain", *TINY, "trainer.max_steps=2", "logger=wandb", "logger.mode=offline")
    proc = sparsebert(*args, "run_id=s", cwd=workdir, env={**SECRETS, "WANDB_MODE": "offline"})
    run_dir = workdir / "runs" / "pretrain" / "s"
    (wandb_run,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # W&B's offline record
    assert b"max_steps" in wandb_run.read_bytes()  # it holds the run's config
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and any(p.suffix == ".log" for p in files)
    for secret in SECRETS.values():
        assert secret not in proc.stdout + proc.stderr
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
