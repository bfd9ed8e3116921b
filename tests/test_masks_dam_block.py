"""Block DAM: one α per (layer, head, query block, key block), expanded to the n × n mask."""

import logging

import pytest
import torch

from sparsebert_cli.attention.interface import AttentionMask, choose_backend
from sparsebert_cli.masks.artifact import load_mask, save_mask
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.masks.dam import DAM
from sparsebert_cli.masks.stats import sparsity


def block_dam(n: int = 10, block_size: int = 4, **kwargs) -> DAM:
    return DAM(heads=2, n=n, layers=3, structure="block", block_size=block_size, **kwargs)


def test_block_alpha_is_one_per_layer_head_query_block_key_block():
    assert block_dam(n=10, block_size=4).alpha.shape == (3, 2, 3, 3)  # ceil(10 / 4) = 3 blocks


def test_from_config_takes_the_models_block_size():
    cfg = MaskConfig(name="dam", structure="block", seq_len=64)
    assert DAM.from_config(cfg, heads=2, layers=4, block_size=16).alpha.shape == (1, 2, 4, 4)


def test_binarized_block_mask_is_each_alpha_tiled_over_its_block_and_cropped_to_n():
    dam = block_dam(n=10, block_size=4)
    with torch.no_grad():
        dam.alpha.copy_(torch.randn(dam.alpha.shape, generator=torch.Generator().manual_seed(0)))
    mask = dam.binarize()
    assert mask.shape == (3, 2, 10, 10)
    for i in range(10):
        for j in range(10):
            assert torch.equal(mask[..., i, j], dam.alpha[..., i // 4, j // 4] > 0)


def test_samples_are_constant_on_each_block():
    torch.manual_seed(0)
    sample = block_dam(n=8, block_size=4).sample().detach()
    tiles = sample.reshape(3, 2, 2, 4, 2, 4)
    assert torch.equal(tiles, tiles[:, :, :, :1, :, :1].expand_as(tiles))


def test_gradients_of_a_sample_reach_every_block_alpha():
    dam = block_dam(n=8, block_size=4)
    torch.manual_seed(0)
    (dam.sample() * torch.arange(64.0).reshape(8, 8)).sum().backward()
    assert (dam.alpha.grad != 0).all()


def test_diagonal_blocks_are_kept_only_when_asked():
    off = block_dam(n=8, block_size=4, init=-3.0)
    on = block_dam(n=8, block_size=4, init=-3.0, keep_diagonal_blocks=True)
    assert not off.binarize().any()
    diagonal = torch.kron(torch.eye(2), torch.ones(4, 4)).bool()
    assert torch.equal(on.binarize(), diagonal.expand(3, 2, 8, 8))
    assert torch.allclose(on.probs()[..., :4, :4], torch.ones(4, 4))


def test_block_mask_artifact_round_trips(tmp_path):
    dam = block_dam(n=10, block_size=4)
    with torch.no_grad():
        dam.alpha.copy_(torch.randn(dam.alpha.shape, generator=torch.Generator().manual_seed(1)))
    save_mask(tmp_path, dam.binarize(), {"kind": dam.kind, "params": {"block_size": 4}})
    mask, meta = load_mask(tmp_path, heads=2, layers=3)
    assert torch.equal(mask, dam.binarize())
    assert meta["kind"] == "dam_b" and meta["params"] == {"block_size": 4}


def test_block_density_is_one_minus_sparsity_and_auto_trains_with_block_sparse():
    n, block_size = 512, 32
    dam = DAM(heads=2, n=n, structure="block", block_size=block_size)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # about 80 % of the blocks dropped
        dam.alpha.copy_(torch.rand(dam.alpha.shape, generator=generator) - 0.8)
    mask = dam.binarize()
    masks = AttentionMask(mask)
    density = masks.layout(0, block_size).block_density
    assert abs(density - (1 - sparsity(mask) / 100)) < 1e-9
    backend, _ = choose_backend(masks, 0, block_size, dropout=0.1)
    assert backend == "block_sparse"


def search_step(backend: str, n: int, frozen: bool, **mask) -> tuple[torch.Tensor, dict]:
    """A search step of a block DAM with about 80 % of its tiles dropped (tiles of 32)."""
    from conftest import dam_search_step

    cfg = MaskConfig(name="dam", structure="block", seq_len=n, init=-1.4, **mask)
    return dam_search_step(cfg, backend, frozen)


@pytest.mark.parametrize(
    "n, frozen, mask",
    [
        (512, False, {}),
        (530, False, {"share_layers": False, "keep_diagonal_blocks": True}),  # a cropped tile
        (512, True, {}),
    ],
    ids=["shared", "per-layer-kept-diagonal-odd-n", "frozen-encoder"],
)
def test_auto_searches_a_sparse_block_dam_block_sparse_with_the_masked_gradients(
    caplog, n, frozen, mask
):
    """A hard block DAM sample of ≤ 90 % tiles runs block-sparse from its tiles; the loss and
    every gradient, α's included, equal those of the dense reference."""
    with caplog.at_level(logging.INFO, logger="sparsebert_cli.attention.interface"):
        loss, grads = search_step("auto", n, frozen, **mask)
    assert "auto → block_sparse (block DAM sample" in caplog.text
    reference_loss, reference = search_step("masked", n, frozen, **mask)
    torch.testing.assert_close(loss, reference_loss)
    assert reference["sparse_mask.dam.alpha"].abs().sum() > 0
    assert grads.keys() == reference.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
