"""Optimisers (AdamW, LAMB) and the learning-rate schedule (warm-up, then linear or polynomial decay).

Parameter groups: weights with decay; biases and LayerNorm without; a DAM's α in its own group
with its own learning rate and no weight decay (docs/paper.md §4: decaying α would bias the mask); and
the Lagrange multipliers of a target sparsity (`masks.dam.SparsityTarget`) in another. LAMB's
trust ratio ‖w‖/‖u‖ applies to the groups with weight decay only, as in apex's FusedLAMB that the
reference code uses (its default, use_nvlamb=False): not to biases and LayerNorm, nor to α or
the multipliers, where it would scale a step by the tensor's size (logits or multipliers that
start at 0 would stay near 0 and could hardly change sign).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from sparsebert_cli.errors import SparseBertError

MULTIPLIERS = "multipliers"  # the parameter name's ending and the group of a target's multipliers


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2020): Adam's update rescaled per tensor by the trust ratio ‖w‖ / ‖u‖.

    The reference code pre-trains with it (lr 6e-3 at batch 65,536). Bias correction is applied;
    the trust ratio is 1 where either norm is zero, and a group without weight decay takes plain
    Adam steps (apex's FusedLAMB with its default use_nvlamb=False).
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
                if not group["weight_decay"]:
                    p.add_(update, alpha=-group["lr"])
                    continue
                update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where(
                    (w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm)
                )
                p.add_(update.mul_(trust), alpha=-group["lr"])  # no .item(): no device sync
        return loss


def encoder_parameters(model: nn.Module) -> set[int]:
    """ids of the encoder's parameters (every `BertModel` inside `model`, also when the model is
    wrapped, e.g. as a distillation objective's `student`); the heads are the rest."""
    from transformers import BertModel

    return {id(p) for m in model.modules() if isinstance(m, BertModel) for p in m.parameters()}


@dataclass(frozen=True)
class GroupRates:
    """Learning rates beside trainer.lr (which the heads, and by default the encoder, use).

    alpha: a DAM's α, in its own group without weight decay; multipliers: the Lagrange
    multipliers of a target sparsity, unscheduled. encoder: the encoder's own rate
    (None: trainer.lr; 0: frozen, no gradients computed). head_warmup: for this many first steps
    the encoder and α stand still (their groups' rate factor is 0) while the heads learn; a
    search on a model without an MLM head (e.g. MiniLM) needs a head that decodes first.
    """

    alpha: float | None = None
    encoder: float | None = None
    head_warmup: int = 0
    multipliers: float | None = (
        None  # a target sparsity's Lagrange multipliers (mask.lagrangian_lr)
    )

    @property
    def own_encoder_group(self) -> bool:
        return self.encoder is not None or self.head_warmup > 0


NO_EXTRA_RATES = GroupRates()  # everything at trainer.lr, no learnable mask


def _decay(name: str, p: nn.Parameter) -> bool:
    return not (p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name)


def param_groups(model: nn.Module, weight_decay: float, rates: GroupRates) -> list[dict]:
    """Decay / no-decay groups (encoder and heads apart when `rates` give the encoder its own
    rate or a warm-up), plus the mask logits α (names ending in 'alpha') and the Lagrange
    multipliers (names ending in 'multipliers') each on their own, without weight decay."""
    groups: dict[str, dict] = {}
    encoder = encoder_parameters(model)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("alpha"):
            group, options = "alpha", {"weight_decay": 0.0, "lr": rates.alpha}
        elif name.endswith(MULTIPLIERS):
            group = MULTIPLIERS
            options = {"weight_decay": 0.0, "lr": rates.multipliers}
            options["scheduled"] = False  # a controller at constant pace, never faded out
        else:
            decays = _decay(name, p)
            group = "decay" if decays else "no_decay"
            options = {"weight_decay": weight_decay if decays else 0.0}
            if rates.own_encoder_group and id(p) in encoder:
                group = f"encoder_{group}"
                if rates.encoder is not None:
                    options["lr"] = rates.encoder
        groups.setdefault(group, {"params": [], "name": group, **options})["params"].append(p)
    if "alpha" in groups and rates.alpha is None:
        raise SparseBertError(
            "the model has a learnable mask but no α learning rate was given (mask.lr)."
        )
    if MULTIPLIERS in groups and rates.multipliers is None:
        raise SparseBertError(
            "the mask has a target sparsity but no multiplier learning rate was given "
            "(mask.lagrangian_lr)."
        )
    order = ("decay", "no_decay", "encoder_decay", "encoder_no_decay", "alpha", MULTIPLIERS)
    return [groups[name] for name in order if name in groups]


def clipped_parameters(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """What `trainer.clip_grad` clips: every group but the target's multipliers. Theirs is the
    controller's ascent direction, N·(s − t, (s − t)²) with N the mask's entry count (thousands):
    in the global norm it set the clipping factor of the model's and α's gradients (~1e-4)."""
    return [p for g in optimizer.param_groups if g["name"] != MULTIPLIERS for p in g["params"]]


def build_optimizer(
    model: nn.Module, trainer_cfg, rates: GroupRates = NO_EXTRA_RATES
) -> torch.optim.Optimizer:
    """AdamW or LAMB over `param_groups`; encoder rate 0 freezes the encoder (requires_grad off)."""
    if rates.encoder == 0:
        encoder = encoder_parameters(model)
        for p in model.parameters():
            if id(p) in encoder:
                p.requires_grad_(False)
    groups = param_groups(model, trainer_cfg.weight_decay, rates)
    betas = tuple(trainer_cfg.betas)
    if trainer_cfg.optimizer == "lamb":
        return Lamb(groups, lr=trainer_cfg.lr, betas=betas)
    return torch.optim.AdamW(groups, lr=trainer_cfg.lr, betas=betas)


def lr_factor(step: int, total: int, warmup: float, kind: str, power: float) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total` steps.

    After the warm-up, `linear` decays over the steps left (Hugging Face's convention), `poly`
    as the reference code's PolyWarmUpScheduler (NVIDIA's BERT, which SparseBERT forked):
    (1 − step / total)^power over all steps, so the rate drops at the end of the warm-up (to
    0.846× with LAMB's 28.43 % and power 0.5).
    """
    warm = math.ceil(warmup * total)
    if step < warm:
        return (step + 1) / warm
    if kind == "constant":
        return 1.0
    if kind == "poly":
        return (1.0 - min(step / total, 1.0)) ** power
    return 1.0 - min((step - warm) / max(total - warm, 1), 1.0)


def build_scheduler(
    optimizer: torch.optim.Optimizer, trainer_cfg, total_steps: int, head_warmup: int = 0
):
    """The warm-up + decay schedule of every group but those marked `scheduled: False`; the
    encoder's and α's groups wait `head_warmup` steps."""

    def factor(step: int) -> float:
        return lr_factor(
            step, total_steps, trainer_cfg.warmup, trainer_cfg.scheduler, trainer_cfg.poly_power
        )

    def waiting(step: int) -> float:
        return 0.0 if step < head_warmup else factor(step)

    waits = ("alpha", "encoder_decay", "encoder_no_decay")

    def constant(_: int) -> float:
        return 1.0

    lambdas = [
        constant if not g.get("scheduled", True) else waiting if g["name"] in waits else factor
        for g in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
