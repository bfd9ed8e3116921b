"""How the loop learns a DAM (search, or fine-tuning with mask=dam): λ·‖M‖₁ and τ's schedule."""

import torch
from omegaconf import DictConfig

from sparsebert_cli.masks.dam import DAM, annealed_tau
from sparsebert_cli.training.loop import Hooks


def add_dam_hooks(hooks: Hooks, mask_cfg: DictConfig, dam: DAM, total_steps: int) -> Hooks:
    """Set the L1 penalty (computed in fp32) and the τ annealing of `dam` on `hooks`."""

    def penalty() -> tuple[torch.Tensor, dict[str, float]]:
        l1 = dam.l1(mask_cfg.l1_norm)
        return mask_cfg.lam * l1, {"mask/l1": l1.item()}

    def before_step(step: int) -> None:
        dam.tau = annealed_tau(mask_cfg, step, total_steps)

    hooks.penalty, hooks.before_step = penalty, before_step
    return hooks
