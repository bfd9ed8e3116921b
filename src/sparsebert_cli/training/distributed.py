"""DDP helpers: this process's rank and world size, and joining the process group (the entry
point torchrun starts for each rank is `launch.rank_main`)."""

import os


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    """This process's rank on its machine (its GPU under torchrun); 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_distributed() -> bool:
    return world()[1] > 1


def init_process_group(device_type: str) -> None:
    """Join the process group: nccl on CUDA, gloo on CPU."""
    import torch.distributed as dist

    if is_distributed() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
