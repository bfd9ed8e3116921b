"""Optimisers (AdamW, LAMB) and the learning-rate schedule (warm-up, then linear or polynomial decay).

Parameter groups: weights with decay; biases and LayerNorm without; a DAM's α in its own group
with its own learning rate and no weight decay (PAPER.md §4: decaying α would bias the mask); and
the Lagrange multipliers of a target sparsity (`masks.dam.SparsityTarget`) in another. Neither α
nor the multipliers get LAMB's trust ratio ‖w‖/‖u‖: it scales a step by the tensor's size, so
logits or multipliers that start at 0 stay near 0 and can hardly change sign.
"""

import math

import torch
from torch import nn

from sparsebert_cli.errors import SparseBertError


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2020): Adam's update rescaled per tensor by the trust ratio ‖w‖ / ‖u‖.

    The reference code pre-trains with it (lr 6e-3 at batch 65,536). Bias correction is applied;
    the trust ratio is 1 where either norm is zero, and is skipped for a group with
    `trust_ratio: False` (plain Adam steps).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                m_hat = exp_avg / (1 - beta1**step)
                v_hat = exp_avg_sq / (1 - beta2**step)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                if not group.get("trust_ratio", True):
                    p.add_(update, alpha=-group["lr"])
                    continue
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where(
                    (w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm)
                )
                p.add_(update.mul_(trust), alpha=-group["lr"])  # no .item(): no device sync
        return loss


def param_groups(
    model: nn.Module,
    weight_decay: float,
    alpha_lr: float | None,
    multiplier_lr: float | None = None,
) -> list[dict]:
    """Decay / no-decay groups, plus the mask logits α (names ending in 'alpha') and the Lagrange
    multipliers (names ending in 'multipliers') each on their own."""
    decay, no_decay, alpha, multipliers = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("alpha"):
            alpha.append(p)
        elif name.endswith("multipliers"):
            multipliers.append(p)
        elif p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    if alpha:
        if alpha_lr is None:
            raise SparseBertError(
                "the model has a learnable mask but no α learning rate was given (mask.lr)."
            )
        groups.append(
            {
                "params": alpha,
                "weight_decay": 0.0,
                "lr": alpha_lr,
                "trust_ratio": False,
                "name": "alpha",
            }
        )
    if multipliers:
        if multiplier_lr is None:
            raise SparseBertError(
                "the mask has a target sparsity but no multiplier learning rate was given "
                "(mask.lagrangian_lr)."
            )
        groups.append(
            {
                "params": multipliers,
                "weight_decay": 0.0,
                "lr": multiplier_lr,
                "trust_ratio": False,
                "scheduled": False,  # a controller at constant pace, never faded out
                "name": "multipliers",
            }
        )
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    trainer_cfg,
    alpha_lr: float | None = None,
    multiplier_lr: float | None = None,
) -> torch.optim.Optimizer:
    groups = param_groups(model, trainer_cfg.weight_decay, alpha_lr, multiplier_lr)
    betas = tuple(trainer_cfg.betas)
    if trainer_cfg.optimizer == "lamb":
        return Lamb(groups, lr=trainer_cfg.lr, betas=betas)
    return torch.optim.AdamW(groups, lr=trainer_cfg.lr, betas=betas)


def lr_factor(step: int, total: int, warmup: float, kind: str, power: float) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total` steps."""
    warm = math.ceil(warmup * total)
    if step < warm:
        return (step + 1) / warm
    if kind == "constant":
        return 1.0
    remaining = max(total - warm, 1)
    progress = min((step - warm) / remaining, 1.0)
    return (1.0 - progress) ** (1.0 if kind == "linear" else power)


def build_scheduler(optimizer: torch.optim.Optimizer, trainer_cfg, total_steps: int):
    """The warm-up + decay schedule on every group but those marked `scheduled: False`."""

    def factor(step: int) -> float:
        return lr_factor(
            step, total_steps, trainer_cfg.warmup, trainer_cfg.scheduler, trainer_cfg.poly_power
        )

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        [factor if g.get("scheduled", True) else (lambda _: 1.0) for g in optimizer.param_groups],
    )
