"""No crash at long n with BERT's 12 heads (issue 18): every mask runs a training step under every
backend that can train it at n = 2048 (where a per-head 12-head SDPA bias passes the cache limit;
a mask with heads alike keeps one head's), and under `auto` at n = 8192, on a 1-layer model of
small hidden size (flex cannot train on CPU; the masked reference at n = 8192 would hold
12 × 8192² scores several times over, 10+ GiB)."""

import pytest
import torch
from conftest import ROOT, tiny_model
from omegaconf import OmegaConf

from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.masks.patterns import PATTERNS
from sparsebert_cli.masks.source import MaskSource
from sparsebert_cli.modeling import build_pretraining_model

HEADS, VOCAB = 12, 64
FIXED = sorted(PATTERNS)
DAMS = ("structured", "block")  # DAM_u at long n is refused with its memory estimate
TRAINING_BACKENDS = ("auto", "masked", "sdpa", "block_sparse")  # flex cannot train on CPU


def one_step(mask: MaskConfig, backend: str, n: int) -> None:
    """Forward and backward of one sequence of n tokens; outputs and gradients finite."""
    model_cfg = tiny_model(
        hidden_size=2 * HEADS,
        num_heads=HEADS,
        num_layers=1,
        intermediate_size=4 * HEADS,
        max_position_embeddings=n,
        attention_backend=backend,
    )
    source = MaskSource.from_config(mask, HEADS, 1, n, model_cfg.block_size)
    torch.manual_seed(0)
    model = build_pretraining_model(model_cfg, source, VOCAB, nsp=False).train()
    ids = torch.randint(5, VOCAB, (1, n))
    positions = torch.arange(1, n, n // 16)[None]
    out = model(
        input_ids=ids,
        token_type_ids=torch.zeros_like(ids),
        attention_mask=torch.ones_like(ids),
        masked_lm_positions=positions,
        masked_lm_ids=ids.gather(1, positions),
        masked_lm_weights=torch.ones(positions.shape),
    )
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def fixed(name: str, n: int) -> MaskConfig:
    """The shipped conf/mask/<name>.yaml (its n = 128 widths)."""
    shipped = OmegaConf.load(ROOT / "conf" / "mask" / f"{name}.yaml")
    return OmegaConf.merge(OmegaConf.structured(MaskConfig), shipped, {"seq_len": n})


@pytest.mark.parametrize("backend", TRAINING_BACKENDS)
@pytest.mark.parametrize("name", FIXED)
def test_every_fixed_mask_trains_under_every_backend_at_n_2048(name, backend):
    one_step(fixed(name, 2048), backend, 2048)


@pytest.mark.parametrize("init", [0.0, -5.0], ids=["half-kept", "sparse"])
@pytest.mark.parametrize("backend", ("auto", "masked"))
@pytest.mark.parametrize("structure", DAMS)
def test_a_dam_searches_at_n_2048(structure, backend, init):
    """α = 0: half of the entries kept; α = −5: few tiles or distances (auto → block_sparse)."""
    one_step(MaskConfig(name="dam", structure=structure, seq_len=2048, init=init), backend, 2048)


@pytest.mark.slow
@pytest.mark.parametrize("name", FIXED)
def test_every_fixed_mask_trains_at_n_8192_with_auto(name):
    """What a user gets at n = 8192: block_sparse for the sparse patterns, SDPA with a float mask
    built per call for the dense ones: 3 GiB for the per-head random and bigbird, 256 MiB for
    strided, fixed and no_diag (their heads are alike: one mask broadcast over the heads)."""
    one_step(fixed(name, 8192), "auto", 8192)
