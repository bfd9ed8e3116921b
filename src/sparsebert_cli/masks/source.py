"""The mask M a model attends with, as one module the model owns: dense, fixed or a learnable DAM."""

import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from sparsebert_cli.attention.capabilities import check_backend
from sparsebert_cli.attention.interface import AttentionMask
from sparsebert_cli.config import ModelConfig
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.artifact import MASK_FILE, check_length, fit_to_length, load_mask
from sparsebert_cli.masks.build import build_fixed_mask
from sparsebert_cli.masks.config import META_FILE, MaskConfig
from sparsebert_cli.masks.dam import DAM
from sparsebert_cli.masks.empty_rows import check_keeps_attention
from sparsebert_cli.masks.patterns import PATTERNS, pattern_params
from sparsebert_cli.runs import layout


class MaskSource(nn.Module):
    """The model's attention mask: dense (no tensor), fixed (a bool buffer) or a learnable DAM.

    Called once per forward pass of the model with the sequence length n, it returns this pass's
    `AttentionMask` for every layer: the fixed M cropped to n (cached per n, block tables
    included), a DAM sample while training (gradients to α; one sample shared by all layers when
    the DAM has one layer; a hard block DAM's as its tiles and a hard DAM_s's as its distances,
    which the block-sparse kernel runs without the n × n float mask and its gradient) or the
    binarized DAM M = 1[α > 0] in eval mode. The attention backend and block size travel with it
    (`use_backend`, from the stage's model config).
    """

    def __init__(
        self,
        kind: str,
        mask: torch.Tensor | None = None,
        dam: DAM | None = None,
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind  # dense | fixed | dam
        self.meta = meta or {"kind": "dense"}  # mask.json fields: kind, params, source_run
        if kind == "fixed":
            # Not in state_dict: the mask travels as mask.safetensors, beside the weights.
            self.register_buffer("mask", mask, persistent=False)
        self.dam = dam
        self.dam_active = True  # False: the DAM stands aside (dense), e.g. while a head warms up
        self.logged: set[str] = set()  # the auto backend choices already logged
        self.backend, self.block_size = "auto", ModelConfig.block_size
        self._fixed: dict[tuple[int, str], AttentionMask] = {}
        self._evaluated: tuple[tuple, AttentionMask] | None = None  # (α version, n; M in eval)

    def use_backend(self, model_cfg: ModelConfig | DictConfig) -> None:
        """Attend with model.attention_backend at model.block_size (refused if it cannot run M)."""
        check_backend(model_cfg.attention_backend, self.kind)
        self.backend, self.block_size = model_cfg.attention_backend, model_cfg.block_size
        self._fixed.clear()
        self._evaluated = None

    def _attention(self, values: torch.Tensor | None, **sample) -> AttentionMask:
        return AttentionMask(
            values, self.logged, backend=self.backend, block_size=self.block_size, **sample
        )

    @classmethod
    def from_config(
        cls,
        cfg: MaskConfig | DictConfig,
        heads: int,
        layers: int,
        n: int,
        block_size: int = ModelConfig.block_size,
    ) -> "MaskSource":
        """The mask of a `mask` config (dense, a fixed pattern, from_run with a resolved
        directory, or dam) for a model with `heads` heads and `layers` layers, at length n
        (`block_size`: the model's, the tile of a block DAM)."""
        if cfg.name == "dense":
            return cls("dense")
        if cfg.name == "dam":
            dam = DAM.from_config(cfg, heads, layers, block_size)
            return cls("dam", dam=dam, meta={"kind": dam.kind})
        mask = build_fixed_mask(cfg, n, heads, layers)
        search, pattern = None, None  # the mask.json of the mask's search; the fixed pattern
        if cfg.name in PATTERNS:
            pattern = cfg.name
            meta = {"kind": cfg.name, "params": pattern_params(cfg)}
        else:
            _, search = load_mask(layout(cfg.from_run).artifacts)
            meta = {
                "kind": search["kind"],
                "params": search.get("params", {}),
                "source_run": cfg.from_run,
            }
        # a mask to train with (a model saved with one, from_checkpoint, was trained already)
        check_keeps_attention(mask, search, pattern)
        return cls("fixed", mask=mask, meta=meta)

    @classmethod
    def from_checkpoint(
        cls, directory: Path, heads: int, layers: int, recorded: str | None
    ) -> "MaskSource":
        """The mask stored with a model checkpoint; dense for a plain Hugging Face checkpoint or
        one saved dense. `recorded`: the mask kind its sparsebert.json names, if it has one; a
        model saved with a mask must still hold its files (without them it ran dense, silently)."""
        directory = Path(directory)
        stored = [name for name in (MASK_FILE, META_FILE) if (directory / name).is_file()]
        if not stored and recorded in (None, "dense"):
            return cls("dense")
        if not stored:
            raise SparseBertError(
                f"{directory} holds a model trained with the {recorded} mask, but its mask files "
                f"({MASK_FILE}, {META_FILE}) are missing; copy them back from the run that wrote "
                "the model, or run that stage again."
            )
        mask, meta = load_mask(directory, heads=heads, layers=layers)
        keep = {
            "kind": meta["kind"],
            "params": meta.get("params", {}),
            "source_run": meta.get("source_run"),
        }
        return cls("fixed", mask=mask, meta=keep)

    def binarized(self) -> torch.Tensor | None:
        """M as bool [L or 1, H, N, N] (the DAM binarized), or None for dense."""
        if self.kind == "dam":
            return self.dam.binarize()
        return self.mask if self.kind == "fixed" else None

    def forward(self, n: int) -> AttentionMask:
        if self.kind == "dense":
            return self._attention(None)
        if self.kind == "dam":
            if not self.dam_active:
                return self._attention(None)
            if not self.training:
                return self._binarized_attention(n)
            dam = self.dam
            check_length(dam.n, n)
            # per α: the attention expands a hard sample only if it runs it densely
            if dam.structure == "block" and dam.hard and dam.block_size == self.block_size:
                blocks = math.ceil(n / dam.block_size)
                return self._attention(None, tiles=dam.sample_tiles()[..., :blocks, :blocks], n=n)
            if dam.structure == "structured" and dam.hard:
                return self._attention(None, distances=dam.sample_distances()[..., :n], n=n)
            return self._attention(dam.sample()[..., :n, :n])
        key = (n, str(self.mask.device))
        if key not in self._fixed:
            self._fixed[key] = self._attention(fit_to_length(self.mask, n))
        return self._fixed[key]

    def train(self, mode: bool = True) -> "MaskSource":
        """Training drops the eval-mode mask: α may change in ways its version does not show (a
        fused optimiser, a write through .data), and the n × n mask need not stay in memory."""
        if mode:
            self._evaluated = None
        return super().train(mode)

    def _binarized_attention(self, n: int) -> AttentionMask:
        """Eval mode: the binarized DAM as this pass's mask, built once per α and length, so an
        evaluation's batches share it and its block tables (a change of α in eval mode, e.g. a
        loaded state, changes α's version and makes a new one)."""
        key = (n, str(self.dam.alpha.device), *self.dam.version)
        if self._evaluated is None or self._evaluated[0] != key:
            self._evaluated = (key, self._attention(fit_to_length(self.dam.binarize(), n)))
        return self._evaluated[1]
