"""DDP helpers, and the entry point torchrun starts for each rank of a distributed job.

The Hydra job (one process) writes the resolved config into its run folder (runs.LAUNCH_CONFIG)
and starts `torchrun -m sparsebert_cli.training.distributed <run_dir> <command>`; every rank reads
that config, so all ranks share one run id and one folder. Only rank 0 writes files.
"""

import os
import sys
from pathlib import Path


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_distributed() -> bool:
    return world()[1] > 1


def init_process_group(device_type: str) -> None:
    """Join the process group: nccl on CUDA, gloo on CPU."""
    import torch.distributed as dist

    if is_distributed() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def main(argv: list[str]) -> int:
    from omegaconf import OmegaConf

    from sparsebert_cli.data.hub import set_offline_env
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.launch import execute
    from sparsebert_cli.runs import LAUNCH_CONFIG

    run_dir, command = Path(argv[0]), argv[1]
    cfg = OmegaConf.load(run_dir / LAUNCH_CONFIG)
    if cfg.offline:
        set_offline_env()
    try:
        execute(cfg, run_dir, command)
    except SparseBertError as e:
        print(f"error (rank {world()[0]}): {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
