"""LAMB and the learning-rate schedule against values computed by hand."""

import pytest
import torch

from sparsebert_cli.training.optim import Lamb, lr_factor


def _one_step(weights: list[float], grad: list[float], lr: float = 0.01) -> torch.Tensor:
    p = torch.nn.Parameter(torch.tensor(weights))
    optimizer = Lamb([p], lr=lr, eps=0.0)
    p.grad = torch.tensor(grad)
    optimizer.step()
    return p.detach()


def test_lamb_scales_the_adam_update_by_the_trust_ratio():
    # First step: m̂ = g, v̂ = g², so the Adam update is sign(g) = [1, 1] (‖u‖ = √2);
    # ‖w‖ = 5, trust = 5/√2, w ← w − lr · trust · u.
    trust = 5 / 2**0.5
    expected = torch.tensor([3.0, 4.0]) - 0.01 * trust
    assert torch.allclose(_one_step([3.0, 4.0], [0.5, 2.0]), expected, atol=1e-6)


def test_lamb_trust_ratio_is_one_for_zero_weights():
    assert torch.allclose(
        _one_step([0.0, 0.0], [1.0, -3.0]), torch.tensor([-0.01, 0.01]), atol=1e-7
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
        (6, "poly", 0.5**0.5),  # (1 − 4/8)^0.5
        (9, "constant", 1.0),
    ],
)
def test_schedule_warms_up_then_decays(step, kind, expected):
    assert lr_factor(step, total=10, warmup=0.2, kind=kind, power=0.5) == pytest.approx(expected)
