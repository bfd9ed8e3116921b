"""The attention-mass top-k control: the mean attention map it is read from, and the selection."""

import pytest
import torch

from sparsebert_cli.attention.profile import AttentionMap
from sparsebert_cli.masks.attention_topk import top_mass_mask


def test_the_attention_map_averages_real_pairs_only_and_fills_shorter_batches_top_left():
    amap = AttentionMap(n=4)
    probs = torch.full((2, 1, 3, 3), 0.5)
    probs[1] = 0.25
    padding = torch.tensor([[False, False, False], [False, False, True]])  # example 1: 2 tokens
    amap.add(0, probs, None, padding)
    mean = amap.mean()
    assert mean.shape == (1, 1, 4, 4)
    assert mean[0, 0, 0, 0] == pytest.approx((0.5 + 0.25) / 2)  # both examples real there
    assert mean[0, 0, 2, 2] == pytest.approx(0.5)  # example 1 pads position 2
    assert mean[0, 0, 3].eq(0).all() and mean[0, 0, :, 3].eq(0).all()  # never seen


def test_top_mass_keeps_each_querys_heaviest_key_then_the_heaviest_entries():
    n = 4
    mass = torch.zeros(1, 1, n, n)
    mass[0, 0, 0, 1:] = torch.tensor([0.9, 0.8, 0.7])  # query 0 is heavy everywhere
    mass[0, 0, 1:, 0] = torch.tensor([0.01, 0.02, 0.03])  # the others' heaviest keys are light
    mask = top_mass_mask(mass, sparsity=0.75, share_layers=True)
    assert mask.shape == (1, 1, n, n) and mask.sum() == 4  # round(0.25 · 16)
    assert mask.any(-1).all()  # every query keeps a key
    assert mask[0, 0, 0].tolist() == [False, True, False, False]  # its one heaviest entry
    assert mask[0, 0, 1:, 0].all()


def test_top_mass_per_layer_or_shared_by_the_layers_mean():
    mass = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    per_layer = top_mass_mask(mass, sparsity=0.5, share_layers=False)
    shared = top_mass_mask(mass, sparsity=0.5, share_layers=True)
    assert per_layer.shape == (2, 3, 8, 8) and shared.shape == (1, 3, 8, 8)
    assert (per_layer.sum((-1, -2)) == 32).all() and (shared.sum((-1, -2)) == 32).all()
    assert torch.equal(shared[0], top_mass_mask(mass.mean(0, keepdim=True), 0.5, False)[0])
