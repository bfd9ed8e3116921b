"""Training checkpoints: model, optimiser, scheduler and loop position, written atomically.

A checkpoint is a folder `checkpoints/step-<N>/` that is filled under a temporary name and renamed
into place when complete, so a run killed mid-write leaves no folder that looks complete. Model
weights are safetensors; the optimiser state is read back with `weights_only=True` (no arbitrary
unpickling). Random streams need no saving: the loop reseeds them from (seed, rank, step).
"""

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparsebert_cli.errors import SparseBertError

KEEP = 2  # complete checkpoints kept on disk


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # Tied weights (decoder/embeddings) share storage, which safetensors refuses: save copies.
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(_state_dict(model), str(tmp))
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise SparseBertError(
            f"{path} is not a readable safetensors file ({e}); delete it and rerun."
        ) from None
    model.load_state_dict(state)


def save_checkpoint(
    directory: Path, step: int, model: nn.Module, optimizer, scheduler, loop_state: dict
) -> Path:
    """Write `directory/step-<step>` atomically and keep the newest KEEP checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = directory / f".step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_state_dict(model), str(tmp / "model.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        tmp / "training_state.pt",
    )
    (tmp / "loop_state.json").write_text(json.dumps({**loop_state, "step": step}))
    for f in tmp.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    for old in complete_checkpoints(directory)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders are never listed)."""
    if not directory.exists():
        return []
    return sorted(
        p for p in directory.glob("step-*") if p.is_dir() and (p / "loop_state.json").exists()
    )


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> dict:
    """Restore everything saved by `save_checkpoint`; returns the loop state (with `step`)."""
    load_weights(model, path / "model.safetensors")
    try:
        state = torch.load(path / "training_state.pt", weights_only=True)
        loop_state = json.loads((path / "loop_state.json").read_text())
    except Exception as e:
        raise SparseBertError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it to resume from an "
            "earlier one, or rerun with resume=never."
        ) from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return loop_state
