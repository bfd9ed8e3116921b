"""Training checkpoints: model, optimiser, scheduler, fp16 loss scale and loop position, written
atomically.

A checkpoint is a folder `checkpoints/step-<N>/` that is filled under a temporary name and renamed
into place when complete, so a run killed mid-write leaves no folder that looks complete. Model
weights are safetensors; the optimiser state is read back with `weights_only=True` (no arbitrary
unpickling). Random streams need no saving: the loop reseeds them from (seed, rank, step).
"""

import json
import os
import pickle
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sparsebert_cli.errors import SparseBertError, first_line
from sparsebert_cli.runs import CHECKPOINT_FILES, atomic_write

KEEP = 2  # complete checkpoints kept on disk
WEIGHTS, TRAINING_STATE, LOOP_STATE = CHECKPOINT_FILES


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # Tied weights (decoder/embeddings) share storage, which safetensors refuses: save copies.
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: Path) -> None:
    state = _state_dict(model)
    try:
        atomic_write(path, lambda tmp: save_file(state, tmp))
    except (OSError, SafetensorError) as e:
        raise SparseBertError(
            f"cannot write {path} ({type(e).__name__}: {e}); free disk space or make the run "
            "folder writable, then rerun the same command to resume."
        ) from None


def load_weights(model: nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise SparseBertError(
            f"{path} is not a readable safetensors file ({e}); delete it and rerun."
        ) from None
    model.load_state_dict(state)


def save_checkpoint(
    directory: Path,
    step: int,
    model: nn.Module,
    optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    loop_state: dict,
) -> Path:
    """Write `directory/step-<step>` atomically and keep the newest KEEP checkpoints.

    A write error (full disk, file-size limit, unwritable folder) removes the partial folder and
    raises a SparseBertError; the checkpoints already on disk are left as they are.
    """
    final = directory / f"step-{step:08d}"
    tmp = directory / f".step-{step:08d}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        discard(tmp)
        tmp.mkdir()
        save_file(_state_dict(model), str(tmp / WEIGHTS))
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),  # fp16's loss scale ({} when disabled)
            },
            tmp / TRAINING_STATE,
        )
        (tmp / LOOP_STATE).write_text(json.dumps({**loop_state, "step": step}))
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        discard(final)
        os.rename(tmp, final)
    except (OSError, RuntimeError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = [p.name for p in complete_checkpoints(directory)]
        raise SparseBertError(
            f"cannot write the checkpoint {final} ({type(e).__name__}: {e}). Free disk space or "
            "make the run folder writable (or set paths.runs_dir=<a writable folder>), then rerun "
            f"the same command to resume (resume=auto); the checkpoints already there are kept: "
            f"{', '.join(kept) or 'none'}."
        ) from None
    for old in complete_checkpoints(directory)[:-KEEP]:
        discard(old)
    return final


def discard(path: Path) -> None:
    """Remove a checkpoint folder so that no step-* folder is ever seen half deleted: rename it to
    a hidden name first (atomic), then delete that."""
    if not path.exists():
        return
    trash = path.with_name(f".{path.name.lstrip('.')}.deleting")
    shutil.rmtree(trash, ignore_errors=True)
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def discard_all(directory: Path) -> None:
    """Remove every checkpoint in `directory`, then the folder if nothing else is left there."""
    for folder in complete_checkpoints(directory):
        discard(folder)
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def complete_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders are never listed)."""
    if not directory.exists():
        return []
    return sorted(
        p
        for p in directory.glob("step-*")
        if p.is_dir() and all((p / f).is_file() for f in CHECKPOINT_FILES)
    )


def load_checkpoint(
    path: Path, model: nn.Module, optimizer, scheduler, scaler: torch.amp.GradScaler
) -> dict:
    """Restore everything saved by `save_checkpoint`; returns the loop state (with `step`)."""
    load_weights(model, path / WEIGHTS)
    try:
        # Onto the CPU: a GPU run resumes on a CPU machine (device is not in the config hash),
        # and each DDP rank would otherwise load rank 0's state onto cuda:0. The optimiser moves
        # its state onto its parameters' device.
        state = torch.load(path / TRAINING_STATE, map_location="cpu", weights_only=True)
        loop_state = json.loads((path / LOOP_STATE).read_text())
    except pickle.UnpicklingError:
        raise SparseBertError(
            f"checkpoint {path} holds a training_state.pt with objects other than tensors and "
            "plain values, which sparsebert refuses to unpickle (it could run code); delete that "
            "checkpoint to resume from an earlier one, or rerun with resume=never."
        ) from None
    except Exception as e:
        reason = first_line(e)
        raise SparseBertError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {reason}); delete it to "
            "resume from an earlier one, or rerun with resume=never."
        ) from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):  # saved by an fp16 run (checkpoints before it was saved have none)
        scaler.load_state_dict(state["scaler"])
    return loop_state
