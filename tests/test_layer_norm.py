"""model.norm=pre: the same parameter names as Hugging Face's post-LN BERT plus one final
LayerNorm, pre-LN residuals, and checkpoints that reload to the same logits."""

import torch
from conftest import tiny_model
from transformers import BertModel

from sparsebert_cli.config import ModelConfig
from sparsebert_cli.layer_norm import PreNormBertLayer
from sparsebert_cli.modeling import (
    MaskSource,
    build_pretraining_model,
    build_task_model,
    load_checkpoint,
    save_checkpoint,
)

VOCAB, N = 50, 12


def config(norm: str) -> ModelConfig:
    return tiny_model(norm=norm)


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (2, N), generator=torch.Generator().manual_seed(0))
    attention = torch.ones(2, N, dtype=torch.long)
    attention[1, -3:] = 0
    return dict(
        input_ids=ids,
        attention_mask=attention,
        token_type_ids=torch.zeros_like(ids),
        masked_lm_positions=torch.tensor([[1, 4], [2, 3]]),
        masked_lm_ids=torch.tensor([[5, 6], [7, 8]]),
        masked_lm_weights=torch.ones(2, 2),
    )


def test_pre_norm_keeps_every_post_norm_name_and_adds_the_final_layer_norm():
    post = build_pretraining_model(config("post"), MaskSource("dense"), VOCAB, nsp=False)
    pre = build_pretraining_model(config("pre"), MaskSource("dense"), VOCAB, nsp=False)
    added = set(pre.state_dict()) - set(post.state_dict())
    assert added == {"bert.encoder.final_layer_norm.weight", "bert.encoder.final_layer_norm.bias"}
    assert set(post.state_dict()) <= set(pre.state_dict())
    assert all(isinstance(layer, PreNormBertLayer) for layer in pre.bert.encoder.layer)


def test_pre_norm_computes_residual_stream_plus_sublayers_of_normalised_inputs():
    torch.manual_seed(0)
    model = build_pretraining_model(config("pre"), MaskSource("dense"), VOCAB, nsp=False).eval()
    layer = model.bert.encoder.layer[0]
    x = torch.randn(1, N, 16)
    with torch.no_grad():
        got = layer(x)
        # by hand: h = x + Wo·attn(LN1(x)); y = h + W2·gelu(W1·LN2(h))
        a = layer.attention.output.LayerNorm(x)
        sa = layer.attention.self
        q, k, v = (p(a).view(1, N, 2, 8).transpose(1, 2) for p in (sa.query, sa.key, sa.value))
        probs = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(1, N, 16)
        h = x + layer.attention.output.dense(context)
        inner = layer.intermediate(layer.output.LayerNorm(h))
        expected = h + layer.output.dense(inner)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_pre_norm_differs_from_post_norm_with_the_same_weights():
    torch.manual_seed(0)
    post = build_pretraining_model(config("post"), MaskSource("dense"), VOCAB, nsp=False).eval()
    pre = build_pretraining_model(config("pre"), MaskSource("dense"), VOCAB, nsp=False).eval()
    pre.load_state_dict(post.state_dict(), strict=False)  # all but the final LayerNorm
    with torch.no_grad():
        assert not torch.allclose(post(**batch()).mlm_logits, pre(**batch()).mlm_logits)


def test_pre_norm_checkpoint_reloads_to_the_same_logits_and_placement(tmp_path):
    torch.manual_seed(0)
    model = build_pretraining_model(config("pre"), MaskSource("dense"), VOCAB, nsp=False).eval()
    with torch.no_grad():
        model.bert.encoder.final_layer_norm.weight.mul_(1.5)  # not the initial identity
    save_checkpoint(model, tmp_path, {"stage": "pretrain"})
    loaded = load_checkpoint(tmp_path, config("pre"))
    assert all(isinstance(layer, PreNormBertLayer) for layer in loaded.bert.encoder.layer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch()).mlm_logits, model(**batch()).mlm_logits)
    # plain Hugging Face still reads every encoder weight it knows (as post-LN)
    assert BertModel.from_pretrained(tmp_path).config.norm_position == "pre"


def test_a_task_model_from_a_pre_norm_checkpoint_is_pre_norm(tmp_path):
    model = build_pretraining_model(config("pre"), MaskSource("dense"), VOCAB, nsp=False)
    save_checkpoint(model, tmp_path, {"stage": "pretrain"})
    # model.norm is not read when the weights come from a checkpoint: the checkpoint decides
    task = build_task_model(config("post"), MaskSource("dense"), 2, "classification", tmp_path)
    assert all(isinstance(layer, PreNormBertLayer) for layer in task.bert.encoder.layer)
    torch.testing.assert_close(
        task.bert.encoder.final_layer_norm.weight, model.bert.encoder.final_layer_norm.weight
    )
