"""The attention entry point inside Hugging Face BERT: padding reaches it, backends agree
through the whole model, auto picks a backend for the situation and logs it once."""

import logging

import pytest
import torch

from sparsebert_cli.attention.capabilities import check_backend
from sparsebert_cli.attention.interface import (
    AUTO_MAX_BLOCK_DENSITY,
    AUTO_MAX_BLOCK_DENSITY_DROPOUT,
    AttentionMask,
    choose_backend,
)
from sparsebert_cli.config import ModelConfig
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.patterns import logsparse
from sparsebert_cli.masks.source import MaskSource
from sparsebert_cli.modeling import build_task_model

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
LAYERS, HEADS, N, VOCAB = 2, 2, 37, 50


def tiny(backend: str) -> ModelConfig:
    return ModelConfig(
        hidden_size=16,
        num_layers=LAYERS,
        num_heads=HEADS,
        intermediate_size=32,
        dropout=0.0,
        attention_dropout=0.0,
        attention_backend=backend,
        block_size=16,
    )


def per_layer_mask() -> torch.Tensor:
    """bool [L, H, n, n]: a band of half-width 3 in layer 0, a strided pattern in layer 1, the
    first token global everywhere; head 1 of layer 0 also sees distance 9."""
    i = torch.arange(N)
    d = (i[:, None] - i[None, :]).abs()
    layer0 = torch.stack([d <= 3, (d <= 3) | (d == 9)])
    layer1 = torch.stack([(d < 4) | (d % 4 == 0)] * HEADS)
    mask = torch.stack([layer0, layer1])
    mask[..., 0, :] = True
    mask[..., :, 0] = True
    return mask


def model(backend: str, mask: torch.Tensor | None = None):
    torch.manual_seed(0)
    source = MaskSource("dense") if mask is None else MaskSource("fixed", mask=mask)
    return build_task_model(tiny(backend), source, 3, "classification", None, vocab_size=VOCAB)


def batch():
    ids = torch.randint(1, VOCAB, (2, N), generator=torch.Generator().manual_seed(1))
    attention = torch.ones(2, N, dtype=torch.long)
    attention[1, 29:] = 0
    return ids, attention


def hidden(m, ids, attention):
    with torch.no_grad():
        out = m(ids, attention_mask=attention, output_hidden_states=True)
    return out.hidden_states[-1]


@pytest.mark.parametrize("backend", ["sdpa", "block_sparse", "flex"])
def test_backends_equal_masked_through_the_model_with_per_layer_masks_and_padding(backend):
    ids, attention = batch()
    expected = hidden(model("masked", per_layer_mask()).eval(), ids, attention)
    got = hidden(model(backend, per_layer_mask()).eval(), ids, attention)
    real = attention.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["masked", "sdpa", "block_sparse"])
def test_padding_is_not_attended(backend):
    ids, attention = batch()
    m = model(backend, per_layer_mask()).eval()
    padded = hidden(m, ids, attention)[1, :29]
    alone = hidden(m, ids[1:, :29], attention[1:, :29])[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


def test_block_sparse_model_gradients_equal_masked_model_gradients():
    ids, attention = batch()
    grads = []
    for backend in ("masked", "block_sparse"):
        m = model(backend, per_layer_mask()).train()
        m(ids, attention_mask=attention, labels=torch.tensor([0, 2])).loss.backward()
        grads.append(m.bert.encoder.layer[0].attention.self.query.weight.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=0)


def band(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return ((i[:, None] - i[None, :]).abs() <= 16).expand(HEADS, n, n)[None]


def choice(mask: torch.Tensor | None, dropout: float = 0.0) -> str:
    masks = AttentionMask(mask)
    return choose_backend(masks, 0, 64, dropout)[0]


def test_auto_uses_sdpa_for_a_dense_mask():
    assert choice(None) == "sdpa"


def test_auto_uses_masked_for_a_dam_sample():
    assert choice(band(1024).float()) == "masked"


def test_auto_uses_sdpa_for_short_sequences():
    assert choice(band(128)) == "sdpa"


def test_auto_uses_sdpa_when_most_blocks_are_active():
    assert choice(torch.ones(1, HEADS, 1024, 1024, dtype=torch.bool)) == "sdpa"


def test_auto_takes_block_sparse_for_denser_masks_under_attention_dropout_on_cpu():
    """SDPA with dropout leaves its fused kernel on CPU: block_sparse up to block density 0.7."""
    tiles = torch.rand(HEADS, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.55
    tiles |= torch.eye(16, dtype=torch.bool)
    mask = tiles.repeat_interleave(64, 1).repeat_interleave(64, 2)[None]
    density = AttentionMask(mask).layout(0, 64).block_density
    assert AUTO_MAX_BLOCK_DENSITY < density <= AUTO_MAX_BLOCK_DENSITY_DROPOUT
    assert choice(mask) == "sdpa"
    assert choice(mask, dropout=0.1) == "block_sparse"
    assert choice(torch.ones(1, HEADS, 1024, 1024, dtype=torch.bool), dropout=0.1) == "sdpa"


def test_auto_uses_block_sparse_for_a_sparse_mask_on_cpu_training_or_not():
    """No FlexAttention compilation on CPU for inference: block_sparse measured faster there."""
    assert choice(band(1024)) == "block_sparse"


def test_auto_takes_the_diagonal_kernel_for_a_mask_on_few_diagonals_whatever_its_tiles():
    """LogSparse at n = 512 touches 68 % of its 64 × 64 tiles (SDPA by block density) but lies on
    19 diagonals: block_sparse computes those only."""
    masks = AttentionMask(logsparse(512, HEADS)[None])
    assert masks.layout(0, 64).block_density > AUTO_MAX_BLOCK_DENSITY
    assert choose_backend(masks, 0, 64, 0.0) == (
        "block_sparse",
        "19 diagonals on cpu",
    )


@pytest.mark.parametrize("band_only, expected", [(False, "masked"), (True, "block_sparse")])
def test_auto_builds_the_kernel_tables_of_a_dam_sample_only_for_the_kernel(
    monkeypatch, band_only, expected
):
    """A search builds a layout per layer and step; a sample that touches every tile runs
    `masked`, and its block tables (the costly part: ~75 ms a layer at n = 2048) are never built;
    a sparse one's are built once, however often the kernel runs it."""
    import sparsebert_cli.attention.block_sparse as block_sparse

    built = []
    original = block_sparse._groups
    monkeypatch.setattr(block_sparse, "_groups", lambda *args: built.append(1) or original(*args))
    n = 512
    # half the distances (every tile touched), or those below 64 (a band: 127 diagonals)
    kept = torch.rand(1, HEADS, n, generator=torch.Generator().manual_seed(0)) < 0.5
    if band_only:
        kept = torch.arange(n) < 64
    kept = kept.expand(1, HEADS, n)
    masks = AttentionMask(None, distances=kept.float(), n=n)
    assert choose_backend(masks, 0, 64, 0.0)[0] == expected
    assert built == []
    if expected == "block_sparse":
        q, k, v = (torch.randn(1, HEADS, n, 8) for _ in range(3))
        for _ in range(2):
            block_sparse.block_sparse_attention(q, k, v, masks.layout(0, 64), None, 1.0)
        assert built == [1]


def test_auto_logs_its_choice_once(caplog):
    ids, attention = batch()
    m = model("auto", per_layer_mask()).eval()
    with caplog.at_level(logging.INFO, logger="sparsebert_cli.attention.interface"):
        hidden(m, ids, attention)
        hidden(m, ids, attention)
    assert [r.getMessage() for r in caplog.records] == [
        f"attention backend auto → sdpa (n={N} < 512: too short for sparsity to pay)"
    ]


def test_flex_refuses_to_train_on_cpu():
    ids, attention = batch()
    m = model("flex", per_layer_mask()).train()
    with pytest.raises(SparseBertError, match="model.attention_backend=block_sparse"):
        m(ids, attention_mask=attention)


def test_an_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(SparseBertError, match="'sparse'.*auto, masked, sdpa, block_sparse, flex"):
        check_backend("sparse", "fixed")


def test_a_dam_mask_needs_a_backend_that_passes_gradients_to_alpha():
    """The message named mask=dam only, and said the samples "can run block-sparse"."""
    with pytest.raises(
        SparseBertError, match=r"mask=dam or one of its presets.*attention_backend=auto"
    ):
        check_backend("block_sparse", "dam")
