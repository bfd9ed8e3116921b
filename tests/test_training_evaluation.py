"""Held-out pre-training metrics computed from a real (tiny) model's outputs."""

import torch
from omegaconf import OmegaConf

from sparsebert_cli.config import ModelConfig
from sparsebert_cli.data.pretraining import collate_pretraining
from sparsebert_cli.masks.source import MaskSource
from sparsebert_cli.modeling import build_pretraining_model
from sparsebert_cli.training.evaluation import evaluate_mlm


def _example(label: int) -> dict:
    return {
        "input_ids": [2, 5, 6, 3, 7, 8, 3],
        "token_type_ids": [0, 0, 0, 0, 1, 1, 1],
        "attention_mask": [1] * 7,
        "masked_lm_positions": [1, 0],
        "masked_lm_ids": [5, 0],
        "masked_lm_weights": [1.0, 0.0],
        "next_sentence_label": label,
    }


def test_nsp_accuracy_counts_only_scored_examples():
    torch.manual_seed(0)
    cfg = OmegaConf.structured(
        ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    )
    model = build_pretraining_model(cfg, MaskSource("dense"), vocab_size=50, nsp=True).eval()
    rows = [_example(0), _example(1), _example(-100)]
    metrics = evaluate_mlm(model, rows, collate_pretraining, batch_size=8)
    with torch.no_grad():
        logits = model(**collate_pretraining(rows))["nsp_logits"]
    expected = (logits[:2].argmax(-1) == torch.tensor([0, 1])).float().mean().item()
    assert metrics["eval/nsp_accuracy"] == expected
    assert metrics["eval/mlm_accuracy"] in (0.0, 1.0)  # one masked token
