"""How the loop learns a DAM (search, or fine-tuning with mask=dam): the sparsity penalty
(λ·‖M‖₁, or the Lagrangian of a target sparsity, computed in fp32) and τ's schedule."""

import torch
from omegaconf import DictConfig

from sparsebert_cli.masks.dam import DAM, annealed_tau
from sparsebert_cli.training.loop import Hooks


def add_dam_hooks(hooks: Hooks, mask_cfg: DictConfig, dam: DAM, total_steps: int) -> Hooks:
    """Set the sparsity penalty and the τ annealing (and target warm-up) of `dam` on `hooks`."""
    target = {"t": 0.0}  # this step's warmed-up target sparsity

    def l1_penalty() -> tuple[torch.Tensor, dict[str, float]]:
        l1 = dam.l1(mask_cfg.l1_norm)
        return mask_cfg.lam * l1, {"mask/l1": l1.item()}

    # N·[λ₁(s − t) + λ₂(s − t)²]: per α, the force of λ·‖M‖₁ whatever the mask's size
    scale = dam.entries() if mask_cfg.l1_norm == "sum" else 1

    def target_penalty() -> tuple[torch.Tensor, dict[str, float]]:
        expected, binarized = dam.expected_sparsity(), dam.sign_sparsity()
        lam1, lam2 = dam.target.multipliers.detach().tolist()
        lagrangian = scale * dam.target(expected, binarized / 100, target["t"])
        return lagrangian, {  # sparsities in percent, as mask/sparsity
            "mask/expected_sparsity": 100.0 * expected.item(),
            "mask/target_sparsity": 100.0 * target["t"],
            "mask/sign_sparsity": binarized,
            "mask/lambda1": lam1,
            "mask/lambda2": lam2,
        }

    def before_step(step: int) -> None:
        dam.tau = annealed_tau(mask_cfg, step, total_steps)
        if dam.target is not None:
            target["t"] = dam.target.target_at(step)

    hooks.penalty = l1_penalty if dam.target is None else target_penalty
    hooks.before_step = before_step
    return hooks
