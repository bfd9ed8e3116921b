"""Build or load a Hugging Face BERT with attention masks attached, and save it as a checkpoint.

The models are transformers' own BERT (`BertModel`, `BertForSequenceClassification`) whose
attention runs through `attention.interface.sparse_attention_forward`. Each model owns a
`masks.source.MaskSource` (the mask M: none, a fixed bool tensor, or a DAM), asks it once per forward pass for
this pass's M and hands it to every layer. The pre-training head computes vocabulary logits only
at the masked positions (as NVIDIA's BERT does): over every token that projection is most of the
CPU cost. A checkpoint is a `save_pretrained` folder plus mask.safetensors/mask.json and
sparsebert.json, so `load_checkpoint` rebuilds exactly the trained model; plain Hugging Face
`AutoModel.from_pretrained` still loads its weights, without the mask.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch import nn
from transformers import (
    BertConfig,
    BertForMultipleChoice,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
)
from transformers.modeling_outputs import ModelOutput
from transformers.models.bert.modeling_bert import BertPredictionHeadTransform, BertPreTrainedModel

from sparsebert_cli.attention.interface import (
    ATTENTION_IMPLEMENTATION,
    register_attention,
)
from sparsebert_cli.attention.profile import AttentionProfile
from sparsebert_cli.config import NORM_FIELD, SIZE_FIELDS, ModelConfig
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.layer_norm import final_layer_norm_state, norm_position, use_pre_norm
from sparsebert_cli.masks.artifact import save_mask
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.masks.source import MaskSource
from sparsebert_cli.pretrained import (
    CHECKPOINT_FILE,
    HEAD_NAMES,
    TASK_HEADS,
    damaged_file,
    model_shape,
    read_bert_config,
    read_record,
    resolve_pretrained,
    weights_file,
    weights_source,
)
from sparsebert_cli.runs import WEIGHTS_FILE, atomic_write_text, layout

RECORD_KEYS = ("model", "head", "nsp", "num_labels", "kind")  # written by build_*_model
# task kind -> Hugging Face's config.problem_type (the only place that word is used)
HF_PROBLEM_TYPES = {"classification": "single_label_classification", "regression": "regression"}


def _check_mask_fits(mask_source: MaskSource, config: BertConfig) -> None:
    mask = mask_source.binarized()
    if mask is None:
        return
    layers, heads = mask.shape[:2]
    if heads != config.num_attention_heads or layers not in (1, config.num_hidden_layers):
        raise SparseBertError(
            f"the mask has {layers} layer(s) × {heads} heads but the model has "
            f"{config.num_hidden_layers} layers × {config.num_attention_heads} heads; build the "
            "mask for this model (model.num_heads / model.num_layers) or choose a matching model."
        )


# --- the config and the mask of a model (where its weights come from: pretrained.py) --------------


def _check_vocabulary(source: Path, rows: int, ids: int) -> None:
    """A model of `rows` embedding rows fed a tokenizer of `ids` ids (rows ≠ ids): refused,
    unless it is the folder's own tokenizer and the model has more rows (a padded vocabulary)."""
    from sparsebert_cli.data.tokenizer import holds_tokenizer

    own = holds_tokenizer(source)  # that one was used, whatever data.tokenizer says
    if own and rows > ids:
        return
    if own:
        fix = "its own tokenizer disagrees with its config.json: put the tokenizer the model was "
        fix += "trained with into that folder"
    else:
        fix = "the folder holds no tokenizer, so data.tokenizer's was used: point data.tokenizer "
        fix += "at the folder of the tokenizer the model was trained with"
    raise SparseBertError(
        f"the model in {source} has a vocabulary of {rows} tokens but the tokenizer hands out ids "
        f"0 to {ids - 1}; {fix}."
    )


def bert_config(
    model_cfg: ModelConfig | DictConfig, vocab_size: int | None, source: Path | None
) -> BertConfig:
    """The BertConfig: read from `source` when given, else built from the model's sizes.

    vocab_size: the tokenizer's `id_bound`. A model from `source` must have an embedding row for
    each of its ids; with the folder's own tokenizer it may have more (a vocabulary padded to a
    round size), with another tokenizer the sizes must agree (a smaller tokenizer there is most
    likely not the model's)."""
    if source is not None:
        config = read_bert_config(source)
        if vocab_size is not None and config.vocab_size != vocab_size:
            _check_vocabulary(source, config.vocab_size, vocab_size)
    else:
        config = BertConfig(
            vocab_size=vocab_size or BertConfig().vocab_size,
            hidden_size=model_cfg.hidden_size,
            num_hidden_layers=model_cfg.num_layers,
            num_attention_heads=model_cfg.num_heads,
            intermediate_size=model_cfg.intermediate_size,
            max_position_embeddings=model_cfg.max_position_embeddings,
        )
        setattr(config, NORM_FIELD, model_cfg.norm)  # a checkpoint keeps the placement
    config.hidden_dropout_prob = model_cfg.dropout
    config.attention_probs_dropout_prob = model_cfg.attention_dropout
    config._attn_implementation = ATTENTION_IMPLEMENTATION
    return config


def build_mask_source(
    mask_cfg: MaskConfig | DictConfig,
    model_cfg: ModelConfig | DictConfig,
    n: int,
    init_from: Path | str | None = None,
) -> MaskSource:
    """The MaskSource of a stage: `mask=checkpoint` reads the mask stored with the weights."""
    layers, heads = model_shape(model_cfg, init_from)
    if mask_cfg.name != "checkpoint":
        return MaskSource.from_config(mask_cfg, heads, layers, n, model_cfg.block_size)
    source = weights_source(model_cfg, init_from)
    if source is None:
        raise SparseBertError(
            "mask=checkpoint means the mask stored with the model, but no model is loaded; set "
            "model.from=<a pretrain run> (or model=hf / model=minilm, dense), or name "
            "a mask (e.g. mask=dense)."
        )
    return MaskSource.from_checkpoint(source, heads, layers, recorded_mask(source))


# --- the models ---------------------------------------------------------------------------------


@dataclass
class PreTrainingOutput(ModelOutput):
    """loss = mlm_loss (+ nsp_loss); mlm_logits [T, V] at the masked positions only."""

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    mlm_correct: torch.Tensor | None = None
    mlm_count: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    nsp_logits: torch.Tensor | None = None


class MaskedPositionsLMHead(nn.Module):
    """BERT's MLM head (transform, then the tied word embeddings + bias) on given positions only."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), word_embeddings, self.bias)


class PreTrainingHeads(nn.Module):
    """Named as in Hugging Face's BertForPreTraining (cls.predictions, cls.seq_relationship)."""

    def __init__(self, config: BertConfig, nsp: bool) -> None:
        super().__init__()
        self.predictions = MaskedPositionsLMHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2) if nsp else None


class MaskedEncoder:
    """Mixin for a model whose encoder `bert` attends with `sparse_mask` (a MaskSource, set after
    HF's `__init__` and so after its weight initialisation: it must not reset α).

    A forward pre-hook on the encoder passes it the mask of each call's length (the last
    dimension of `input_ids`: [B, n], or [B·choices, n] for multiple choice) unless the caller
    gives `sparse_mask=`, so `model.bert(...)` alone (hidden states) attends with the mask too.
    The hook is a bound method: a deep copy of the model gets one bound to the copy.
    """

    def attach_mask(self, mask_source: MaskSource) -> None:
        self.sparse_mask = mask_source
        self.bert.register_forward_pre_hook(self._pass_sparse_mask, with_kwargs=True)

    def _pass_sparse_mask(self, encoder: nn.Module, args: tuple, kwargs: dict):
        if kwargs.get("sparse_mask") is None:
            ids = args[0] if args else kwargs.get("input_ids")
            if ids is None:
                ids = kwargs["inputs_embeds"][..., 0]
            kwargs["sparse_mask"] = self.sparse_mask(ids.shape[-1])
        return args, kwargs


class SparseBertForPreTraining(MaskedEncoder, BertPreTrainedModel):
    """BERT with masked attention for MLM (+ NSP) pre-training."""

    def __init__(self, config: BertConfig, mask_source: MaskSource, nsp: bool) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=nsp)
        use_pre_norm(self.bert)
        self.cls = PreTrainingHeads(config, nsp)
        self.post_init()
        self.attach_mask(mask_source)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        masked_lm_positions: torch.Tensor | None = None,
        masked_lm_ids: torch.Tensor | None = None,
        masked_lm_weights: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        attention_profile: AttentionProfile | None = None,
    ) -> PreTrainingOutput:
        """masked_lm_*: [B, P] (positions padded with 0, weights 0 for padding);
        attention_profile: collects where the heads attend (held-out evaluation)."""
        out = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            attention_profile=attention_profile,
        )
        hidden = out.last_hidden_state  # [B, n, h]
        index = masked_lm_positions[..., None].expand(-1, -1, hidden.shape[-1])
        picked = hidden.gather(1, index).flatten(0, 1)  # [B·P, h]
        logits = self.cls.predictions(picked, self.bert.embeddings.word_embeddings.weight)
        targets, weights = masked_lm_ids.flatten(), masked_lm_weights.flatten().float()
        count = weights.sum()
        token_loss = F.cross_entropy(logits.float(), targets, reduction="none")
        mlm_loss = (token_loss * weights).sum() / count.clamp(min=1e-5)
        correct = ((logits.argmax(dim=-1) == targets).float() * weights).sum()
        output = PreTrainingOutput(
            loss=mlm_loss,
            mlm_loss=mlm_loss,
            mlm_correct=correct.detach(),
            mlm_count=count.detach(),
            mlm_logits=logits,
        )
        if self.cls.seq_relationship is not None:
            output.nsp_logits = self.cls.seq_relationship(out.pooler_output)
            if next_sentence_label is not None:
                output.nsp_loss = F.cross_entropy(output.nsp_logits.float(), next_sentence_label)
                output.loss = mlm_loss + output.nsp_loss
        return output


class MaskedHead(MaskedEncoder):
    """Mixin for a Hugging Face BERT task model: its encoder attends with `sparse_mask`."""

    def __init__(self, config: BertConfig, mask_source: MaskSource) -> None:
        super().__init__(config)
        use_pre_norm(self.bert)  # after HF's init: the final LayerNorm starts as the identity
        self.attach_mask(mask_source)


class SparseBertForSequenceClassification(MaskedHead, BertForSequenceClassification):
    """Hugging Face's BertForSequenceClassification with masked attention."""


class SparseBertForQuestionAnswering(MaskedHead, BertForQuestionAnswering):
    """Hugging Face's BertForQuestionAnswering (start/end logits per token) with masked attention."""


class SparseBertForMultipleChoice(MaskedHead, BertForMultipleChoice):
    """Hugging Face's BertForMultipleChoice with masked attention: inputs [B, choices, n] are
    flattened to [B·choices, n] sequences, each scored, logits [B, choices]."""


HEAD_CLASSES = dict(
    zip(
        HEAD_NAMES,
        (
            SparseBertForSequenceClassification,
            SparseBertForQuestionAnswering,
            SparseBertForMultipleChoice,
        ),
        strict=True,
    )
)


def _weights_misfit(source: Path, detail: str) -> SparseBertError:
    """The error for weights that do not fit their folder's config.json."""
    return SparseBertError(
        f"the weights in {source} do not fit its config.json: {detail}. The folder was edited or "
        "mixed up (a model saved from a DDP-wrapped module keeps a 'module.' prefix: save the "
        "unwrapped model); make config.json match the weights, rerun the stage that wrote them, "
        "or point at another model."
    )


def _check_weights_fit(source: Path, info: dict, encoder: str) -> None:
    """Refuse what Hugging Face's loader only logs: encoder weights missing from the file
    (renamed keys; they would start from random values) or layers beyond config.json's (dropped).
    `encoder`: the encoder's key prefix; a missing pooler is new by design (sentence encoders)."""
    missing = [
        k for k in info["missing_keys"] if k.startswith(encoder) and ".pooler." not in f".{k}"
    ]
    extra = [k for k in info["unexpected_keys"] if ".encoder.layer." in f".{k}"]
    if missing:
        raise _weights_misfit(
            source, f"{len(missing)} encoder weights are missing ('{missing[0]}')"
        )
    if extra:
        raise _weights_misfit(
            source, f"{len(extra)} weights belong to no layer it describes ('{extra[0]}')"
        )


def _load_pretrained_weights(model: nn.Module, source: Path, heads: bool) -> bool:
    """Copy the encoder (and, with `heads`, the pre-training heads it has) from `source`; whether
    `source` had an MLM head (a sentence encoder such as MiniLM has none).

    Hugging Face's loader reads the folder, so legacy names and layouts keep working.
    """
    try:
        loaded, info = (BertForPreTraining if heads else BertModel).from_pretrained(
            source, output_loading_info=True
        )
    except Exception as error:  # safetensors' own error types, OSError, pickle errors: all damage
        raise damaged_file(weights_file(Path(source)), error) from None
    _check_weights_fit(source, info, encoder="bert." if heads else "")
    mlm_head = False
    if heads:
        missing = set(info["missing_keys"])
        mlm_head = "cls.predictions.transform.dense.weight" not in missing
        state = {
            k: v
            for k, v in loaded.state_dict().items()
            if k.startswith("cls.") and k not in missing and "decoder" not in k
        }
        if model.cls.seq_relationship is None:
            state = {k: v for k, v in state.items() if "seq_relationship" not in k}
        model.cls.load_state_dict(
            {k.removeprefix("cls."): v for k, v in state.items()}, strict=False
        )
        encoder = loaded.bert
    else:
        encoder = loaded
    encoder_state = encoder.state_dict()  # always has a pooler (HF initialises a missing one)
    if model.bert.pooler is None:
        encoder_state = {k: v for k, v in encoder_state.items() if not k.startswith("pooler.")}
    if norm_position(model.config) == "pre":
        encoder_state.update(final_layer_norm_state(source))
    model.bert.load_state_dict(encoder_state)
    return mlm_head


def init_positions(bert: BertModel, position_init: str) -> None:
    """model.position_init=sinusoidal: the position table starts as Vaswani et al.'s sinusoids,
    scaled to the spread of BERT's initial embeddings (each entry's RMS = initializer_range), so
    positions neither drown the token embeddings nor start as noise (then trained as usual)."""
    if position_init != "sinusoidal":
        return
    table = bert.embeddings.position_embeddings.weight
    positions, width = table.shape
    rate = torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
    angles = torch.arange(positions)[:, None] * rate[None]
    sinusoids = torch.zeros(positions, width)
    sinusoids[:, 0::2], sinusoids[:, 1::2] = torch.sin(angles), torch.cos(angles[:, : width // 2])
    with torch.no_grad():
        table.copy_(sinusoids * bert.config.initializer_range * math.sqrt(2.0))


def _model_record(model_cfg: ModelConfig | DictConfig, config: BertConfig, **fields) -> dict:
    """The model settings as built: the sizes are the BERT config's, so a checkpoint's own sizes
    (model=hf, minilm, model.from) replace the preset's, which it did not read."""
    model = OmegaConf.to_container(OmegaConf.structured(model_cfg), resolve=True)
    model.update({key: getattr(config, attribute) for key, attribute in SIZE_FIELDS.items()})
    model["norm"] = norm_position(config)
    return {"model": model, **fields}


def _config_for(
    model_cfg: ModelConfig | DictConfig,
    mask_source: MaskSource,
    init_from: Path | str | None,
    vocab_size: int | None,
) -> tuple[Path | None, BertConfig]:
    """Where a model's weights come from (None: a new model) and its BertConfig, checked against
    the mask; the attention backend set from `model_cfg` for `mask_source`."""
    register_attention()
    mask_source.use_backend(model_cfg)
    source = weights_source(model_cfg, init_from)
    config = bert_config(model_cfg, vocab_size, source)
    _check_mask_fits(mask_source, config)
    return source, config


def build_pretraining_model(
    model_cfg: ModelConfig | DictConfig,
    mask_source: MaskSource,
    vocab_size: int,
    nsp: bool,
    init_from: Path | str | None = None,
) -> SparseBertForPreTraining:
    """BERT for MLM (+ NSP): random init of the model's sizes, or the weights of init_from (a
    resolved run's model folder), model.from_run or model.name_or_path."""
    source, config = _config_for(model_cfg, mask_source, init_from, vocab_size)
    model = SparseBertForPreTraining(config, mask_source, nsp)
    # Whether the MLM head predicts anything yet: False for a new model and for a checkpoint
    # without one, whose head is new (`report --occlusion` then cannot use the MLM loss).
    model.trained_mlm_head = False
    if source is not None:
        model.trained_mlm_head = _load_pretrained_weights(model, source, heads=True)
    else:
        init_positions(model.bert, model_cfg.position_init)
    model.sparsebert_record = _model_record(model_cfg, config, head="pretraining", nsp=nsp)
    return model


def build_task_model(
    model_cfg: ModelConfig | DictConfig,
    mask_source: MaskSource,
    num_labels: int,
    kind: str,
    init_from: Path | str | None,
    vocab_size: int | None = None,
) -> BertPreTrainedModel:
    """The task model with masked attention: BertForSequenceClassification (task kind
    classification or regression), BertForQuestionAnswering (question_answering, num_labels 2:
    start and end) or BertForMultipleChoice (multiple_choice). The encoder comes from init_from
    (a sparsebert checkpoint, run directory, Hugging Face folder or hub name), model.from_run or
    model.name_or_path, else random (vocab_size: the tokenizer's, BERT's 30522 when None); the head is
    new. Build `mask_source` with `build_mask_source` for mask=checkpoint."""
    if kind not in TASK_HEADS:
        raise SparseBertError(f"task.kind={kind!r} is unknown; use one of {', '.join(TASK_HEADS)}.")
    source, config = _config_for(model_cfg, mask_source, init_from, vocab_size)
    config.num_labels = num_labels
    if kind in HF_PROBLEM_TYPES:
        config.problem_type = HF_PROBLEM_TYPES[kind]
    head = TASK_HEADS[kind]
    model = HEAD_CLASSES[head](config, mask_source)
    if source is not None:
        _load_pretrained_weights(model, source, heads=False)
    else:
        init_positions(model.bert, model_cfg.position_init)
    model.sparsebert_record = _model_record(
        model_cfg, config, head=head, num_labels=num_labels, kind=kind
    )
    return model


# --- checkpoints --------------------------------------------------------------------------------


def save_checkpoint(model: nn.Module, directory: Path, extra_config: dict) -> None:
    """save_pretrained + the mask (mask.safetensors, mask.json) + sparsebert.json, written last."""
    directory = Path(directory)
    model.save_pretrained(directory)
    source = model.sparse_mask
    mask = source.binarized()
    if mask is not None:
        save_mask(directory, mask.cpu(), dict(source.meta))
    record = {**model.sparsebert_record, "mask": source.meta, **extra_config}
    atomic_write_text(directory / CHECKPOINT_FILE, json.dumps(record, indent=2) + "\n")


def recorded_mask(directory: Path) -> str | None:
    """The mask kind a sparsebert checkpoint folder says it was saved with; None for a folder
    without sparsebert.json (a Hugging Face model)."""
    if not (Path(directory) / CHECKPOINT_FILE).is_file():
        return None
    return _mask_kind(read_record(directory))


def _mask_kind(record: dict) -> str:
    mask = record.get("mask")
    return str(mask.get("kind", "dense")) if isinstance(mask, dict) else "dense"


def load_checkpoint(directory: Path, model_cfg: ModelConfig | DictConfig) -> nn.Module:
    """The model saved by `save_checkpoint`, with its mask (a searched DAM comes back binarized,
    as a fixed mask: identical logits in eval mode), attending with `model_cfg`'s backend."""
    directory = resolve_pretrained(directory)
    record_path = directory / CHECKPOINT_FILE
    if not record_path.is_file():
        raise SparseBertError(
            f"{directory} is not a sparsebert checkpoint (no {CHECKPOINT_FILE}); point at the "
            f"model folder ({layout('<run>').model}) of a completed pretrain or finetune run."
        )
    record = read_record(directory)
    config = read_bert_config(directory)
    config._attn_implementation = ATTENTION_IMPLEMENTATION
    register_attention()
    mask_source = MaskSource.from_checkpoint(
        directory, config.num_attention_heads, config.num_hidden_layers, _mask_kind(record)
    )
    mask_source.use_backend(model_cfg)
    if record["head"] == "pretraining":
        model = SparseBertForPreTraining(config, mask_source, record["nsp"])
    else:
        model = HEAD_CLASSES[record["head"]](config, mask_source)
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise damaged_file(directory / WEIGHTS_FILE, error) from None
    state = {k: v for k, v in state.items() if not k.startswith("sparse_mask.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing, unexpected or mis-sized weights, on its 2nd line
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise _weights_misfit(directory, lines[min(1, len(lines) - 1)][:300]) from None
    model.sparsebert_record = {k: v for k, v in record.items() if k in RECORD_KEYS}
    return model.eval()
