"""How the loop learns a DAM (search, or fine-tuning with mask=dam): the sparsity penalty
(λ·‖M‖₁, or the Lagrangian of a target sparsity, computed in fp32) and τ's schedule.

The DAM's schedules count its own steps: a search's head warm-up (`start` steps on the dense
model) holds the mask aside, so τ anneals and the target rises over the steps after it, and the
penalty does not act during it (its metrics are still logged): the target's multipliers would
otherwise climb on the gap of a mask nobody trains, and α's optimiser moments fill with
penalty-only gradients."""

import torch
from omegaconf import DictConfig

from sparsebert_cli.masks.dam import DAM, annealed_tau
from sparsebert_cli.training.loop import Hooks


def add_dam_hooks(
    hooks: Hooks, mask_cfg: DictConfig, dam: DAM, total_steps: int, start: int = 0
) -> Hooks:
    """Set the sparsity penalty and the τ annealing (and target warm-up) of `dam` on `hooks`;
    the DAM learns from 0-based step `start` on."""
    state = {"t": 0.0, "active": True}  # this step's warmed-up target sparsity; penalty on

    def l1_penalty() -> tuple[torch.Tensor, dict[str, float]]:
        l1 = dam.l1(mask_cfg.l1_norm)
        return mask_cfg.lam * l1, {"mask/l1": l1.item()}

    # N·[λ₁(s − t) + λ₂(s − t)²]: per α, the force of λ·‖M‖₁ whatever the mask's size
    scale = dam.entries() if mask_cfg.l1_norm == "sum" else 1

    def target_penalty() -> tuple[torch.Tensor, dict[str, float]]:
        expected, binarized = dam.expected_sparsity(), dam.sign_sparsity()
        lam1, lam2 = dam.target.multipliers.detach().tolist()
        lagrangian = scale * dam.target(expected, binarized / 100, state["t"])
        return lagrangian, {  # sparsities in percent, as mask/sparsity
            "mask/expected_sparsity": 100.0 * expected.item(),
            "mask/target_sparsity": 100.0 * state["t"],
            "mask/sign_sparsity": binarized,
            "mask/lambda1": lam1,
            "mask/lambda2": lam2,
        }

    penalty = l1_penalty if dam.target is None else target_penalty

    def penalty_from_start() -> tuple[torch.Tensor, dict[str, float]]:
        if state["active"]:
            return penalty()
        with torch.no_grad():
            value, metrics = penalty()
        return torch.zeros_like(value), metrics

    def before_step(step: int) -> None:
        state["active"] = step >= start
        own_step = max(step - start, 0)
        dam.tau = annealed_tau(mask_cfg, own_step, total_steps - start)
        if dam.target is not None:
            state["t"] = dam.target.target_at(own_step)

    hooks.penalty = penalty_from_start
    hooks.before_step = before_step
    return hooks
