"""A search's importance trace: σ(α) snapshots written while it runs (`<run>/trace/step-*`), and
their stack, [T, L, H, n, n] `probs` with the `steps` [T] they were taken at, which the search
writes to its artifacts when it completes and figures read while it runs."""

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sparsebert_cli.runs import atomic_write


def write_snapshot(trace_dir: Path, step: int, probs: torch.Tensor) -> None:
    tensors = {"probs": probs.float().contiguous()}
    atomic_write(trace_dir / f"step-{step:08d}.safetensors", lambda tmp: save_file(tensors, tmp))


def snapshot_files(trace_dir: Path) -> list[Path]:
    """The snapshots in `trace_dir`, oldest first."""
    return sorted(trace_dir.glob("step-*.safetensors"))


def stacked_snapshots(trace_dir: Path) -> dict[str, torch.Tensor]:
    """{"probs": [T, L, H, n, n], "steps": [T]} of the snapshots in `trace_dir` ({} if none)."""
    files = snapshot_files(trace_dir)
    if not files:
        return {}
    steps = torch.tensor([int(f.stem.split("-")[1]) for f in files], dtype=torch.int64)
    return {"probs": torch.stack([load_file(str(f))["probs"] for f in files]), "steps": steps}
