"""Models with masks attached: dense equals Hugging Face's BERT, the MLM head at masked positions,
DAM masks, checkpoints that rebuild the trained model, and where the weights come from."""

import json

import pytest
import torch
from conftest import tiny_model
from huggingface_hub import constants
from omegaconf import OmegaConf
from transformers import BertConfig, BertForPreTraining, BertModel

from sparsebert_cli.config import ModelConfig
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.modeling import (
    MaskSource,
    build_mask_source,
    build_pretraining_model,
    build_task_model,
    load_checkpoint,
    save_checkpoint,
)
from sparsebert_cli.pretrained import resolve_pretrained

VOCAB, N = 60, 24
# a plain Hugging Face BERT of tiny()'s sizes
TINY_BERT = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32)  # fmt: skip


def tiny(**overrides) -> ModelConfig:
    return tiny_model(**overrides)


def minilm() -> ModelConfig:
    return ModelConfig(name_or_path="embedded:minilm", dropout=0.0, attention_dropout=0.0)


def window_source(heads: int = 2) -> MaskSource:
    cfg = OmegaConf.structured(MaskConfig(name="window", window=2))
    return MaskSource.from_config(cfg, heads=heads, layers=2, n=N)


def padded_batch(vocab: int = VOCAB, n: int = N):
    ids = torch.randint(1, vocab, (2, n), generator=torch.Generator().manual_seed(3))
    attention = torch.ones(2, n, dtype=torch.long)
    attention[1, n - 7 :] = 0
    return ids, attention


def mlm_batch():
    ids, attention = padded_batch()
    return dict(
        input_ids=ids,
        attention_mask=attention,
        token_type_ids=torch.zeros_like(ids),
        masked_lm_positions=torch.tensor([[1, 5, 9], [2, 4, 0]]),
        masked_lm_ids=torch.tensor([[7, 8, 9], [10, 11, 0]]),
        masked_lm_weights=torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
        next_sentence_label=torch.tensor([0, 1]),
    )


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_dense_mask_on_minilm_equals_hugging_face_bert(implementation):
    ours = build_task_model(minilm(), MaskSource("dense"), 2, "classification", None).eval()
    path = resolve_pretrained("embedded:minilm")
    theirs = BertModel.from_pretrained(path, attn_implementation=implementation).eval()
    ids, attention = padded_batch(vocab=30522, n=19)
    with torch.no_grad():
        expected = theirs(ids, attention_mask=attention).last_hidden_state
        got = ours(ids, attention_mask=attention, output_hidden_states=True).hidden_states[-1]
    real = attention.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_dense_mask_on_a_random_model_equals_hugging_face_bert(implementation):
    torch.manual_seed(0)
    ours = build_task_model(tiny(), MaskSource("dense"), 2, "classification", None, VOCAB).eval()
    theirs = BertModel(ours.config)
    theirs.load_state_dict(ours.bert.state_dict())
    theirs.set_attn_implementation(implementation)
    ids, attention = padded_batch()
    with torch.no_grad():
        expected = theirs(ids, attention_mask=attention).last_hidden_state
        got = ours(ids, attention_mask=attention, output_hidden_states=True).hidden_states[-1]
    real = attention.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)


def pretraining(mask_source: MaskSource | None = None, nsp: bool = True):
    torch.manual_seed(0)
    return build_pretraining_model(tiny(), mask_source or MaskSource("dense"), VOCAB, nsp)


def test_mlm_logits_are_hugging_face_logits_at_the_masked_positions():
    ours = pretraining().eval()
    theirs = BertForPreTraining(ours.config)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    theirs.tie_weights()
    batch = mlm_batch()
    with torch.no_grad():
        full = theirs(batch["input_ids"], batch["attention_mask"]).prediction_logits
        got = ours(**batch).mlm_logits
    positions = batch["masked_lm_positions"]
    expected = full[torch.arange(2)[:, None], positions].flatten(0, 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_mlm_loss_and_accuracy_count_only_weighted_positions():
    batch = mlm_batch()
    with torch.no_grad():
        out = pretraining().eval()(**batch)
    targets = batch["masked_lm_ids"].flatten()[:5]
    real = out.mlm_logits[:5]
    assert out.mlm_count == 5
    assert out.mlm_correct == (real.argmax(-1) == targets).sum()
    torch.testing.assert_close(out.mlm_loss, torch.nn.functional.cross_entropy(real, targets))


def test_the_loss_adds_the_next_sentence_loss():
    with torch.no_grad():
        out = pretraining().eval()(**mlm_batch())
    expected = torch.nn.functional.cross_entropy(out.nsp_logits, torch.tensor([0, 1]))
    torch.testing.assert_close(out.nsp_loss, expected)
    torch.testing.assert_close(out.loss, out.mlm_loss + out.nsp_loss)


def test_without_nsp_the_model_has_no_pooler_and_the_loss_is_mlm():
    model = pretraining(nsp=False)
    out = model(**mlm_batch())
    assert model.bert.pooler is None
    assert out.nsp_loss is None and out.loss is out.mlm_loss


def dam_source() -> MaskSource:
    cfg = OmegaConf.structured(MaskConfig(name="dam", seq_len=N, init=0.5))
    return MaskSource.from_config(cfg, heads=2, layers=2, n=N)


def test_the_dam_logits_alpha_are_a_model_parameter():
    names = [name for name, _ in pretraining(dam_source()).named_parameters()]
    assert "sparse_mask.dam.alpha" in names


def test_training_samples_the_dam_once_per_forward_pass_and_alpha_gets_gradients(monkeypatch):
    model = pretraining(dam_source()).train()
    calls = []
    sample = model.sparse_mask.dam.sample
    monkeypatch.setattr(model.sparse_mask.dam, "sample", lambda: calls.append(1) or sample())
    model(**mlm_batch()).loss.backward()
    assert len(calls) == 1
    assert model.sparse_mask.dam.alpha.grad.abs().sum() > 0


def test_eval_mode_uses_the_binarized_dam_mask():
    model = pretraining(dam_source()).eval()
    with torch.no_grad():
        model.sparse_mask.dam.alpha.copy_(torch.randn_like(model.sparse_mask.dam.alpha))
    fixed = pretraining(MaskSource("fixed", mask=model.sparse_mask.dam.binarize())).eval()
    fixed.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(model(**mlm_batch()).mlm_logits, fixed(**mlm_batch()).mlm_logits)


def _step(alpha: torch.Tensor, optimizer: type, **options) -> None:
    alpha.grad = torch.full_like(alpha, 2.0)
    optimizer([alpha], lr=2.0, **options).step()


# Ways α goes from 1 (keep everything) to below 0 (drop everything), and whether in train mode.
ALPHA_CHANGES = {
    "sgd-step": (True, lambda alpha: _step(alpha, torch.optim.SGD)),
    "fused-adamw-step": (True, lambda alpha: _step(alpha, torch.optim.AdamW, fused=True)),
    "write-through-data": (True, lambda alpha: alpha.data.fill_(-1.0)),
    "copy-in-eval-mode": (False, lambda alpha: alpha.detach().copy_(torch.full_like(alpha, -1))),
}


@pytest.mark.parametrize("change", ALPHA_CHANGES)
def test_eval_batches_share_one_binarized_mask_until_alpha_changes(change):
    """An evaluation builds the binarized M and its block tables once, not per batch; after α
    changes — by an optimiser (fused ones too), a write through .data, or in eval mode — the
    next evaluation follows the new α."""
    model = pretraining(dam_source())
    source = model.sparse_mask
    with torch.no_grad():
        source.dam.alpha.fill_(1.0)
    model.eval()
    first = source(N)
    assert source(N) is first
    assert bool(first.layer(0).all())
    in_train_mode, apply = ALPHA_CHANGES[change]
    model.train(in_train_mode)
    apply(source.dam.alpha)
    model.eval()
    after = source(N)
    assert after is not first
    assert not bool(after.layer(0).any())


def test_a_checkpoint_with_a_mask_reloads_with_identical_logits(tmp_path):
    model = pretraining(window_source()).eval()
    save_checkpoint(model, tmp_path, {"run": "pretrain-1"})
    loaded = load_checkpoint(tmp_path, tiny())
    with torch.no_grad():
        assert torch.equal(loaded(**mlm_batch()).mlm_logits, model(**mlm_batch()).mlm_logits)
    assert torch.equal(loaded.sparse_mask.mask, model.sparse_mask.mask)


@pytest.mark.parametrize("head", ["pretraining", "classification"])
def test_the_encoder_called_alone_attends_with_the_models_mask(tmp_path, head):
    """`model.bert(...)` (hidden states) ran dense attention: only the model's forward passed
    the mask. A deep copy attends with its own mask, not the original's."""
    import copy

    if head == "pretraining":
        model = pretraining(window_source()).eval()
    else:
        model = build_task_model(tiny(), window_source(), 2, "classification", None, VOCAB).eval()
    dense = copy.deepcopy(model)
    dense.sparse_mask = MaskSource("dense")
    ids, attention = padded_batch()
    with torch.no_grad():
        alone = model.bert(ids, attention_mask=attention).last_hidden_state
        given = model.bert(
            ids, attention_mask=attention, sparse_mask=model.sparse_mask(ids.shape[1])
        ).last_hidden_state
        unmasked = dense.bert(ids, attention_mask=attention).last_hidden_state
    assert torch.equal(alone, given)
    assert not torch.allclose(alone, unmasked, atol=1e-3)


def test_a_loaded_checkpoint_attends_with_the_backend_it_is_loaded_with(tmp_path):
    """The backend is the loading stage's model.attention_backend, not the training one."""
    save_checkpoint(pretraining(window_source()), tmp_path, {})
    assert "attention_backend" not in json.loads((tmp_path / "config.json").read_text())
    loaded = load_checkpoint(tmp_path, tiny(attention_backend="flex", block_size=8)).train()
    assert (loaded.sparse_mask.backend, loaded.sparse_mask.block_size) == ("flex", 8)
    with pytest.raises(SparseBertError, match="attention_backend=flex has no backward pass"):
        loaded(**mlm_batch())


def test_a_checkpoint_records_the_model_config_mask_and_extra_config(tmp_path):
    save_checkpoint(pretraining(window_source()), tmp_path, {"run": "pretrain-1"})
    record = json.loads((tmp_path / "sparsebert.json").read_text())
    assert record["head"] == "pretraining" and record["nsp"] is True
    assert record["model"]["hidden_size"] == 16
    assert record["mask"] == {"kind": "window", "params": {"window": 2}}
    assert record["run"] == "pretrain-1"


def test_a_dam_checkpoint_reloads_as_its_binarized_mask(tmp_path):
    model = pretraining(dam_source()).eval()
    with torch.no_grad():
        model.sparse_mask.dam.alpha.copy_(torch.randn_like(model.sparse_mask.dam.alpha))
    save_checkpoint(model, tmp_path, {})
    loaded = load_checkpoint(tmp_path, tiny())
    assert loaded.sparse_mask.kind == "fixed"
    with torch.no_grad():
        assert torch.equal(loaded(**mlm_batch()).mlm_logits, model(**mlm_batch()).mlm_logits)


def test_plain_hugging_face_loads_the_weights_of_a_checkpoint(tmp_path):
    model = pretraining(window_source())
    save_checkpoint(model, tmp_path, {})
    plain = BertModel.from_pretrained(tmp_path, attn_implementation="eager")
    for name, tensor in model.bert.state_dict().items():
        assert torch.equal(plain.state_dict()[name], tensor), name


def test_pretraining_continues_from_a_checkpoint_with_its_heads(tmp_path):
    saved = pretraining(window_source()).eval()
    save_checkpoint(saved, tmp_path, {})
    continued = build_pretraining_model(tiny(from_run=str(tmp_path)), window_source(), VOCAB, True)
    with torch.no_grad():
        expected = saved(**mlm_batch())
        got = continued.eval()(**mlm_batch())
    assert torch.equal(got.mlm_logits, expected.mlm_logits)
    assert torch.equal(got.nsp_logits, expected.nsp_logits)


def test_a_task_model_starts_from_the_pretrained_encoder(tmp_path):
    pretrained = pretraining(window_source())
    save_checkpoint(pretrained, tmp_path, {})
    task = build_task_model(tiny(), window_source(), 3, "classification", tmp_path)
    for name, tensor in pretrained.bert.state_dict().items():
        assert torch.equal(task.bert.state_dict()[name], tensor), name


def test_mask_checkpoint_takes_the_mask_stored_with_the_model(tmp_path):
    pretrained = pretraining(window_source())
    save_checkpoint(pretrained, tmp_path, {})
    cfg = OmegaConf.structured(MaskConfig(name="checkpoint"))
    source = build_mask_source(cfg, tiny(), N, init_from=tmp_path)
    assert source.kind == "fixed" and torch.equal(source.mask, pretrained.sparse_mask.mask)


def test_mask_checkpoint_of_a_plain_hugging_face_model_is_dense():
    cfg = OmegaConf.structured(MaskConfig(name="checkpoint"))
    assert build_mask_source(cfg, minilm(), N).kind == "dense"


def test_a_task_checkpoint_reloads_with_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = build_task_model(tiny(), window_source(), 1, "regression", None, VOCAB).eval()
    save_checkpoint(model, tmp_path, {})
    loaded = load_checkpoint(tmp_path, tiny())
    ids, attention = padded_batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention).logits, model(ids, attention).logits)
    assert loaded.config.problem_type == "regression"


def test_a_mask_for_other_heads_is_refused():
    with pytest.raises(SparseBertError, match=r"1 layer\(s\) × 4 heads.*2 layers × 2 heads"):
        build_task_model(tiny(), window_source(heads=4), 2, "classification", None, VOCAB)


def test_an_unreachable_hub_model_names_the_local_alternatives(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SparseBertError, match="'bert-base-uncased'.*model=minilm"):
        resolve_pretrained("bert-base-uncased")


def test_a_missing_local_model_folder_is_named_not_looked_up_on_the_hub(tmp_path):
    """A path that is not there was sent to the hub ("cannot get the model … HFValidationError")."""
    with pytest.raises(SparseBertError, match=f"the model folder {tmp_path}/nope does not exist"):
        resolve_pretrained(str(tmp_path / "nope"))
    (tmp_path / "weights.txt").write_text("x")  # a file: there, but no folder
    with pytest.raises(SparseBertError, match="weights.txt is a file, not a folder"):
        resolve_pretrained(str(tmp_path / "weights.txt"))


def test_embedded_minilm_resolves_to_the_folder_in_the_installed_wheel():
    path = resolve_pretrained("embedded:minilm")
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_the_record_of_a_hub_checkpoint_keeps_its_own_sizes_not_the_presets():
    model = build_task_model(minilm(), MaskSource("dense"), 2, "classification", None)
    sizes = {
        k: model.sparsebert_record["model"][k] for k in ("hidden_size", "num_layers", "num_heads")
    }
    assert sizes == {"hidden_size": 384, "num_layers": 6, "num_heads": 12}


def test_a_pretraining_model_knows_whether_its_mlm_head_was_trained(tmp_path):
    """MiniLM (a sentence encoder) ships no MLM head; a saved pre-training checkpoint has one."""
    assert not build_pretraining_model(
        tiny(), MaskSource("dense"), VOCAB, nsp=False
    ).trained_mlm_head
    vocab = resolve_pretrained("embedded:minilm") / "vocab.txt"
    size = len(vocab.read_text(encoding="utf-8").splitlines())
    assert not build_pretraining_model(
        minilm(), MaskSource("dense"), size, nsp=False
    ).trained_mlm_head
    model = build_pretraining_model(tiny(), MaskSource("dense"), VOCAB, nsp=False)
    save_checkpoint(model, tmp_path, {"stage": "pretrain", "run_dir": str(tmp_path)})
    again = build_pretraining_model(
        tiny(), MaskSource("dense"), VOCAB, nsp=False, init_from=tmp_path
    )
    assert again.trained_mlm_head


def test_a_model_of_another_architecture_is_refused_not_replaced_by_a_random_bert(tmp_path):
    """A GPT-2 folder as model.name_or_path fine-tuned a randomly initialised BERT-base (its
    config read as a BertConfig, none of its weights loaded) and reported "completed"."""
    from sparsebert_cli.pretrained import read_bert_config

    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2}')
    with pytest.raises(SparseBertError, match=r"is a 'gpt2' model .* not a BERT"):
        read_bert_config(tmp_path)
    BertConfig(num_hidden_layers=1).save_pretrained(tmp_path)  # model_type bert
    assert read_bert_config(tmp_path).num_hidden_layers == 1


def _edit_weights(folder, rename) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    save_file({rename(k): v for k, v in load_file(str(path)).items()}, str(path))


def _edit_config(folder, **fields) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.mark.parametrize("heads", [True, False])
def test_weights_under_other_names_are_refused_not_trained_from_random_values(tmp_path, heads):
    """A folder saved from a DDP-wrapped model ('module.' before every key) was fine-tuned from a
    random encoder, Hugging Face's "newly initialized" note hidden, the run "completed"."""
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(tmp_path)
    _edit_weights(tmp_path, lambda key: f"module.{key}")
    build = (
        (lambda: build_pretraining_model(tiny(), MaskSource("dense"), VOCAB, False, tmp_path))
        if heads
        else (lambda: build_task_model(tiny(), MaskSource("dense"), 2, "classification", tmp_path))
    )
    with pytest.raises(SparseBertError, match=r"do not fit its config.json: \d+ encoder weights "
                       r"are missing .*'module\.' prefix"):  # fmt: skip
        build()


def test_layers_beyond_the_config_are_refused_not_dropped(tmp_path):
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(tmp_path)
    _edit_config(tmp_path, num_hidden_layers=1)
    with pytest.raises(SparseBertError, match=r"weights belong to no layer it describes "
                       r"\('encoder\.layer\.1\."):  # fmt: skip
        build_task_model(tiny(), MaskSource("dense"), 2, "classification", tmp_path)


@pytest.mark.parametrize("edit", [{"num_hidden_layers": 1}, {"hidden_size": 32}])
def test_a_checkpoint_whose_config_was_edited_is_refused_in_one_paragraph(tmp_path, edit):
    """evaluate's loader ended in a bare 'Error(s) in loading state_dict' traceback."""
    save_checkpoint(build_task_model(tiny(), MaskSource("dense"), 2, "classification", None,
                                     VOCAB), tmp_path, {})  # fmt: skip
    _edit_config(tmp_path, **edit)
    with pytest.raises(SparseBertError, match=r"do not fit its config.json: (Unexpected|size)"):
        load_checkpoint(tmp_path, tiny())
