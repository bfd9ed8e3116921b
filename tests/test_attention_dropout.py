"""The sparse kernels' attention dropout: a seeded draw of 16 bits per entry."""

import pytest
import torch

from sparsebert_cli.attention.dropout import LEVELS, dropout_multiplier


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_each_entry_is_dropped_with_probability_p_rounded_to_its_bits(p):
    """Every lane of the 64-bit words drops at the same rate (a lane short of random bits would
    drop less); kept entries carry the inverse of the keep probability."""
    torch.manual_seed(0)
    multiplier = dropout_multiplier(torch.empty(4_000_000), p)
    rounded = round(p * LEVELS) / LEVELS
    scale = 1 / (1 - rounded)
    assert set(multiplier.unique().tolist()) == pytest.approx([0.0, scale])
    dropped = (multiplier == 0).float().view(-1, 4).mean(dim=0)  # per lane of a word
    assert dropped.tolist() == pytest.approx([rounded] * 4, abs=2e-3)
    assert float(multiplier.double().mean()) == pytest.approx(1.0, abs=2e-3)


def test_the_draw_is_fixed_by_the_seed_and_shaped_and_typed_like_its_input():
    like = torch.empty(3, 5, 7, dtype=torch.float64)
    torch.manual_seed(1)
    first = dropout_multiplier(like, 0.5)
    torch.manual_seed(1)
    assert torch.equal(first, dropout_multiplier(like, 0.5))
    assert first.shape == like.shape and first.dtype == torch.float64
    assert not torch.equal(first, dropout_multiplier(like, 0.5))


def test_a_probability_near_one_still_keeps_some_entries_with_a_finite_scale():
    torch.manual_seed(0)
    multiplier = dropout_multiplier(torch.empty(1_000_000), 1 - 1e-9)
    assert torch.isfinite(multiplier).all()
    assert float(multiplier.max()) == LEVELS
