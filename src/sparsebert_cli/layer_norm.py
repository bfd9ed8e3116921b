"""Where the LayerNorms sit: post-LN (BERT as published, Hugging Face's own) or pre-LN.

Post-LN normalises after each residual sum, h = LN(x + F(x)); pre-LN normalises each sublayer's
input and leaves the residual stream untouched, h = x + F(LN(x)), with one final LayerNorm where
the heads read the stream. Pre-LN trains stably at larger learning rates without a long warm-up,
which is what lets a small model leave the unigram plateau within a CPU budget (Cramming, Geiping
and Goldstein 2022, made the same choice). `use_pre_norm` turns a Hugging Face `BertModel` into
pre-LN in place: each layer reuses its own two LayerNorms (`attention.output.LayerNorm` before
attention, `output.LayerNorm` before the feed-forward block), so every state-dict name stays, and
the encoder gains `encoder.final_layer_norm`. The placement is stored in config.json
(`norm_position`); plain Hugging Face loads such weights as post-LN, which computes something
else, so only `load_checkpoint` reads pre-LN checkpoints faithfully.
"""

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import BertConfig, BertModel
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions
from transformers.models.bert.modeling_bert import BertEncoder, BertLayer

from sparsebert_cli.config import NORM_FIELD
from sparsebert_cli.runs import WEIGHTS_FILE


class PreNormBertLayer(BertLayer):
    """BertLayer with pre-LN residuals; the same modules and parameters as Hugging Face's."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: None = None,
        encoder_attention_mask: None = None,
        **kwargs,
    ) -> torch.Tensor:
        """The encoder's call; cross-attention (a decoder's) is not part of BERT's encoder."""
        attention, sublayer = self.attention, self.attention.output
        context, _ = attention.self(
            sublayer.LayerNorm(hidden_states), attention_mask=attention_mask, **kwargs
        )
        hidden_states = hidden_states + sublayer.dropout(sublayer.dense(context))
        inner = self.intermediate(self.output.LayerNorm(hidden_states))
        return hidden_states + self.output.dropout(self.output.dense(inner))


class PreNormBertEncoder(BertEncoder):
    """BertEncoder whose output passes through the final LayerNorm of a pre-LN stack."""

    final_layer_norm: nn.LayerNorm

    def forward(self, *args, **kwargs) -> BaseModelOutputWithPastAndCrossAttentions:
        output = super().forward(*args, **kwargs)
        output.last_hidden_state = self.final_layer_norm(output.last_hidden_state)
        return output


def norm_position(config: BertConfig) -> str:
    """The LayerNorm placement a config records (Hugging Face checkpoints: post)."""
    return getattr(config, NORM_FIELD, "post")


def use_pre_norm(bert: BertModel) -> None:
    """Make `bert` pre-LN in place when its config says so (a no-op for post-LN)."""
    config = bert.config
    if norm_position(config) == "post":
        return
    for layer in bert.encoder.layer:
        layer.__class__ = PreNormBertLayer  # forward only: modules and parameters unchanged
    bert.encoder.__class__ = PreNormBertEncoder
    bert.encoder.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


def final_layer_norm_state(folder: Path) -> dict[str, torch.Tensor]:
    """The final LayerNorm of a pre-LN checkpoint, keyed as in `BertModel` (Hugging Face's own
    loader does not know it); empty for a post-LN checkpoint."""
    prefix = "bert.encoder.final_layer_norm."
    with safe_open(str(Path(folder) / WEIGHTS_FILE), framework="pt") as weights:
        return {
            k.removeprefix("bert."): weights.get_tensor(k)
            for k in weights.keys()
            if k.startswith(prefix)
        }
