"""Schema of the `trainer` config group: the one training loop shared by every training stage."""

from dataclasses import dataclass

OPTIMIZERS = ("adamw", "lamb")  # training/optim.py
SCHEDULERS = ("linear", "poly", "constant")  # training/optim.py: lr_factor
PRECISIONS = ("fp32", "bf16", "fp16")  # training/loop.py: autocast (fp16 on CUDA only)
DEVICES = ("auto", "cpu", "cuda")  # training/loop.py: resolve_device


@dataclass
class TrainerConfig:
    max_steps: int = 100  # optimiser steps (search, pretrain); finetune uses epochs when > 0
    epochs: int = 0
    batch_size: int = 32  # global batch per optimiser step (split across ranks and accumulation)
    grad_accum: int = 1
    eval_batch_size: int = 64
    optimizer: str = "adamw"  # one of OPTIMIZERS
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: str = "linear"  # one of SCHEDULERS
    warmup: float = 0.1  # fraction of the steps
    poly_power: float = 0.5
    clip_grad: float = 1.0  # 0 disables clipping
    precision: str = "fp32"  # one of PRECISIONS
    device: str = "auto"  # one of DEVICES
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)
    eval_every: int = (
        0  # steps between evaluations (0: every epoch with epochs > 0, else at the end)
    )
    ckpt_every: int = 0  # steps between checkpoints (0: every 10 % of the steps or 5 minutes)
    log_every: int = 10
    nproc_per_node: int = 1  # > 1 relaunches the stage under torchrun (DDP)
