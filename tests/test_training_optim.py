"""LAMB and the learning-rate schedule against values computed by hand."""

import pytest
import torch

from sparsebert_cli.training.optim import Lamb, lr_factor


def _one_step(
    weights: list[float], grad: list[float], lr: float = 0.01, weight_decay: float = 0.0
) -> torch.Tensor:
    p = torch.nn.Parameter(torch.tensor(weights))
    optimizer = Lamb([p], lr=lr, eps=0.0, weight_decay=weight_decay)
    p.grad = torch.tensor(grad)
    optimizer.step()
    return p.detach()


def test_lamb_scales_the_adam_update_by_the_trust_ratio():
    # First step: m̂ = g, v̂ = g², so the Adam update is sign(g) = [1, 1], plus the decoupled
    # decay 0.1·w = [0.3, 0.4]: u = [1.3, 1.4]; trust = ‖w‖ / ‖u‖, w ← w − lr · trust · u.
    u = torch.tensor([1.3, 1.4])
    expected = torch.tensor([3.0, 4.0]) - 0.01 * (5 / u.norm()) * u
    assert torch.allclose(_one_step([3.0, 4.0], [0.5, 2.0], weight_decay=0.1), expected, atol=1e-6)


def test_lamb_takes_a_plain_adam_step_without_weight_decay():
    """apex's FusedLAMB (the reference code's, use_nvlamb=False): biases and LayerNorm, in the
    no-decay group, get no trust ratio; it scaled their step by ‖w‖ / ‖u‖ = 5/√2 here."""
    assert torch.allclose(_one_step([3.0, 4.0], [0.5, 2.0]), torch.tensor([2.99, 3.99]), atol=1e-6)


def test_lamb_trust_ratio_is_one_for_zero_weights():
    assert torch.allclose(
        _one_step([0.0, 0.0], [1.0, -3.0], weight_decay=0.1),
        torch.tensor([-0.01, 0.01]),
        atol=1e-7,
    )


def test_lamb_state_round_trips_through_a_state_dict():
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = Lamb([p])
    p.grad = torch.ones(3)
    optimizer.step()
    restored = Lamb([p])
    restored.load_state_dict(optimizer.state_dict())
    assert restored.state[p]["step"] == 1
    assert torch.equal(restored.state[p]["exp_avg"], optimizer.state[p]["exp_avg"])


@pytest.mark.parametrize(
    ("step", "kind", "expected"),
    [
        (0, "linear", 0.5),  # warm-up: 2 steps of 10
        (1, "linear", 1.0),
        (6, "linear", 0.5),  # (1 − 4/8)
        (6, "poly", 0.4**0.5),  # the reference's (1 − 6/10)^0.5, over all steps
        (2, "poly", 0.8**0.5),  # the first step after the warm-up already decays
        (9, "constant", 1.0),
    ],
)
def test_schedule_warms_up_then_decays(step, kind, expected):
    assert lr_factor(step, total=10, warmup=0.2, kind=kind, power=0.5) == pytest.approx(expected)


class _Linear(torch.nn.Module):
    """loss = w · x: the gradient of w is x."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2, 2))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": (self.weight * x).sum()}


def test_clipping_leaves_out_a_targets_multipliers():
    """The multipliers' gradient is N·(s − t, (s − t)²), N the mask's entry count: inside the
    global norm it scaled the model's gradients by ~1e-4 at every step of a targeted search."""
    from omegaconf import OmegaConf

    from sparsebert_cli.masks.dam import SparsityTarget
    from sparsebert_cli.training.config import TrainerConfig
    from sparsebert_cli.training.loop import Penalised, optimizer_step
    from sparsebert_cli.training.optim import GroupRates, build_optimizer, build_scheduler

    model, target = _Linear(), SparsityTarget(0.8)
    entries = 8192  # the scale of N·(s − t)

    def penalty():
        expected = torch.tensor(0.3, requires_grad=True)
        return entries * target(expected, 0.3, 0.8), {}

    objective = Penalised(model, penalty)
    objective.target = target  # its multipliers train with the model, as a search's do
    trainer = OmegaConf.structured(TrainerConfig(clip_grad=1.0, lr=1e-3))
    optimizer = build_optimizer(objective, trainer, GroupRates(multipliers=1e-2))
    seen = {}
    optimizer.register_step_pre_hook(
        lambda *_: seen.update(w=model.weight.grad.clone(), m=target.multipliers.grad.clone())
    )
    x = torch.full((2, 2), 0.2)  # ‖∂loss/∂w‖ = 0.4, under clip_grad
    scheduler = build_scheduler(optimizer, trainer, 10)
    scaler = torch.amp.GradScaler(enabled=False)
    optimizer_step(objective, [{"x": x}], optimizer, scheduler, scaler, trainer)
    assert torch.equal(seen["w"], x)  # not scaled by clip_grad / ‖(g_w, g_λ)‖ ≈ 2e-4
    assert seen["m"].abs().max() > 1000  # the controller's own step is untouched too
