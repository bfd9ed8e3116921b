"""DDP helpers: this process's rank and world size, and joining the process group (the entry
point torchrun starts for each rank is `launch.rank_main`, through `sparsebert_cli.rank`)."""

import os


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    """This process's rank on its machine (its GPU under torchrun); 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_distributed() -> bool:
    return world()[1] > 1


def process_group_backend(device_type: str) -> str:
    """nccl for CUDA tensors, and gloo for the loop's small CPU tensors (the finite-loss flag,
    the logged loss, the stop request) on any device: nccl alone has no CPU collectives."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def init_process_group(device_type: str) -> None:
    """Join the process group (`process_group_backend`)."""
    import torch.distributed as dist

    if is_distributed() and not dist.is_initialized():
        dist.init_process_group(backend=process_group_backend(device_type))
