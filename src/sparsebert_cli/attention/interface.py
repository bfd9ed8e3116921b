"""The one attention entry point of the model, registered with transformers' `AttentionInterface`.

`BertSelfAttention` calls `sparse_attention_forward(module, q, k, v, attention_mask, scaling,
dropout, **kwargs)`; the model's forward passes the mask M of this forward pass as the keyword
`sparse_mask` (an `AttentionMask`), and the function picks layer `module.layer_idx`'s [H, n, n]
slice and the backend the mask object carries (`AttentionMask.backend`, set from `cfg.model`
each time a stage builds or loads a model, never stored in Hugging Face's config):

    masked        exact reference, any mask (a DAM sample included: gradients to α)
    sdpa          the same maths on PyTorch's fused SDPA kernels (boolean masks, passed as an
                  additive float mask built once per mask and layer)
    block_sparse  only the active key blocks, or a mask's few diagonals (binary masks, and a
                  hard block DAM or DAM_s sample with its gradient; CPU and CUDA)
    flex          FlexAttention (binary masks; forward-only on CPU in torch 2.13)
    auto          the fastest correct one for the mask, length, device and grad mode

The padding mask comes from a mask builder registered under the same name with
`AttentionMaskInterface` (transformers' SDPA one): without it a custom implementation receives
`attention_mask=None` and padding is silently attended.
"""

import logging
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from sparsebert_cli.attention.block_sparse import (
    BlockLayout,
    block_layout,
    block_sparse_attention,
    distance_layout,
    expand_tiles,
    tile_layout,
)
from sparsebert_cli.attention.capabilities import check_flex
from sparsebert_cli.attention.diagonal import expand_distances
from sparsebert_cli.attention.flex import flex_block_mask, flex_sparse_attention
from sparsebert_cli.attention.masked import (
    SdpaMask,
    attention_probs,
    build_sdpa_mask,
    masked_attention,
    sdpa_attention,
)
from sparsebert_cli.attention.profile import AttentionProfile
from sparsebert_cli.config import ModelConfig

log = logging.getLogger(__name__)

ATTENTION_IMPLEMENTATION = "sparsebert"
# auto: below this length, or above this block density, SDPA with the (cached) mask is faster
# than skipping blocks (measured with `python -m benchmarks attention`; its crossover table times
# masks of randomly kept 32 × 32 tiles, the worst layout for block_sparse: fwd+bwd over dense at
# block density ≈ 0.3 / 0.45 / 0.6, block_sparse ran ×1.41 / ×1.01 / ×0.84 at n = 1024 against
# ×0.90–0.91 for SDPA with the mask, and ×1.56 / ×1.08 / ×0.69 against ×0.73–0.75 at n = 4096 in
# the committed run, benchmarks/results/attention.md).
AUTO_MIN_SPARSE_LENGTH = 512
AUTO_MAX_BLOCK_DENSITY = 0.45
# With attention dropout on CPU, SDPA leaves its fused kernel for the math path (the n × n
# probabilities held), so block_sparse pays up to denser masks. Random 32 × 32 tiles, 8 heads,
# fwd+bwd, dropout 0.1, SDPA's time over block_sparse's: 1.96 / 1.64 / 0.96 / 0.85 at block
# density 0.47 / 0.62 / 0.76 / 0.90 (n = 1024), 2.28 / 1.61 / 1.30 / 0.88 at 0.45 / 0.60 / 0.75 /
# 0.90 (n = 2048); without dropout 0.64 at 0.47 and 1.02 at 0.45 (Intel Xeon, 2 threads, load
# 1.5). On CUDA SDPA keeps a fused kernel with dropout and a mask.
AUTO_MAX_BLOCK_DENSITY_DROPOUT = 0.7
# auto for a hard DAM sample per α, whose alternative is `masked` (the n × n float mask, every
# score and the mask's gradient): block_sparse up to this block density. A search step of
# model=small with a block DAM sample run block_sparse took 0.50 / 0.62 / 0.69 / 0.84 of the
# `masked` step's time at block density 0.45 / 0.6 / 0.75 / 0.9 (n = 1024), 0.95 at 0.9 (n = 512)
# and 0.76 at 0.9 (n = 2048); 1.01–1.02 at 0.99 (one process each, 2 threads, load 2.2). With a
# DAM_s band: 0.59 / 0.70 / 0.80 / 0.89 at 0.46 / 0.63 / 0.73 / 0.87, 1.07 at 0.97 (n = 1024),
# 1.08 at 0.96 (n = 2048; load 0.2–1.8).
AUTO_MAX_SAMPLE_DENSITY = 0.9
# The held-out evaluation's attention profile works on this many bytes of [b, H, n, n] float
# tensors at a time (scores, probabilities and the profile's masks and products).
PROFILE_CHUNK_BYTES, PROFILE_TEMPORARIES = 256 * 2**20, 6


@dataclass
class AttentionMask:
    """M for one forward pass of the model, handed to every layer.

    values: [L or 1, H, n, n] (one mask shared by all layers when L = 1), bool for a fixed or
    binarized mask, float 0/1 for a DAM sample; None for dense attention. A hard DAM sample
    (float, exactly 0/1) may come per α instead, with `values` None until a backend asks for the
    n × n mask (`layer` expands it once): a block DAM's as `tiles` [L or 1, H, QB, QB] (tiles of
    `block_size`), a DAM_s's as `distances` [L or 1, H, n]; the block-sparse kernel runs such a
    sample from its layout and gives its values their gradient. The block tables of each layer
    are built on first use and kept as long as this object (a fixed mask keeps it across
    batches). `logged` holds the auto choices already logged by the model. `backend` and
    `block_size` are model.attention_backend and model.block_size of the stage that runs it.
    """

    values: torch.Tensor | None
    logged: set[str] = field(default_factory=set)
    backend: str = "auto"
    block_size: int = ModelConfig.block_size
    cache: dict[tuple, object] = field(default_factory=dict)
    tiles: torch.Tensor | None = None
    distances: torch.Tensor | None = None
    n: int = 0  # the sequence length of a per-α sample's expansion

    def __post_init__(self) -> None:
        if self.tiles is not None and self.distances is not None:
            raise ValueError("an AttentionMask holds tiles or distances, not both")
        if self.per_alpha is not None and self.n <= 0:
            raise ValueError("an AttentionMask of a per-α sample needs n, the length it expands to")

    @property
    def per_alpha(self) -> torch.Tensor | None:
        """The hard DAM sample per α (tiles or distances), or None."""
        return self.tiles if self.tiles is not None else self.distances

    @property
    def dense(self) -> bool:
        """No mask: every query attends to every key."""
        return self.values is None and self.per_alpha is None

    def _index(self, layer: int) -> int:
        stacked = self.values if self.per_alpha is None else self.per_alpha
        return layer if stacked.shape[0] > 1 else 0

    def layer(self, layer: int) -> torch.Tensor | None:
        """M of one layer: [H, n, n], or None for dense attention."""
        if self.values is None and self.tiles is not None:
            self.values = expand_tiles(self.tiles, self.block_size, self.n)
        if self.values is None and self.distances is not None:
            self.values = expand_distances(self.distances, self.n)
        return None if self.values is None else self.values[self._index(layer)]

    def layer_sample(self, layer: int) -> dict[str, torch.Tensor]:
        """A per-α sample of one layer as the block-sparse kernel's keyword: {"tiles": [H, QB,
        QB]} or {"distances": [H, n]}; empty without one."""
        if self.tiles is not None:
            return {"tiles": self.tiles[self._index(layer)]}
        if self.distances is not None:
            return {"distances": self.distances[self._index(layer)]}
        return {}

    def layout(self, layer: int, block_size: int) -> BlockLayout:
        """The block index table of one layer's M (built once; from the tiles of a block DAM
        sample at its own block size, never on diagonals: its tiles take the gradient; from the
        kept distances of a DAM_s sample)."""
        key = ("layout", self._index(layer), block_size)
        if key not in self.cache:
            if self.tiles is not None:
                if block_size != self.block_size:
                    raise ValueError(f"the tiles are {self.block_size} wide, not {block_size}")
                hard = self.tiles[self._index(layer)].detach() > 0.5
                self.cache[key] = tile_layout(hard, block_size, self.n)
            elif self.distances is not None:
                kept = self.distances[self._index(layer)].detach() > 0.5
                self.cache[key] = distance_layout(kept, block_size)
            else:
                self.cache[key] = block_layout(self.layer(layer), block_size)
        return self.cache[key]

    def sdpa_mask(self, layer: int, dtype: torch.dtype) -> SdpaMask:
        """The additive float mask and empty rows of one layer's boolean M (built once)."""
        key = ("sdpa", self._index(layer), dtype)
        if key not in self.cache:
            self.cache[key] = build_sdpa_mask(self.layer(layer), dtype)
        return self.cache[key]

    def flex_mask(self, layer: int, block_size: int, key_padding: torch.Tensor | None):
        """FlexAttention's BlockMask of one layer (kept when there is no padding)."""
        if key_padding is not None:
            return flex_block_mask(self.layer(layer), key_padding, block_size)
        key = ("flex", self._index(layer), block_size)
        if key not in self.cache:
            self.cache[key] = flex_block_mask(self.layer(layer), None, block_size)
        return self.cache[key]


def choose_backend(
    masks: AttentionMask, layer: int, block_size: int, dropout: float
) -> tuple[str, str]:
    """auto: (backend, reason) for this layer's mask, length, device and attention dropout."""
    if masks.per_alpha is not None and masks.n >= AUTO_MIN_SPARSE_LENGTH:
        # A hard DAM sample per α: its kept entries, and their values' gradient, block-sparse.
        kind = "block DAM" if masks.tiles is not None else "DAM_s"
        layout = masks.layout(layer, block_size)
        if layout.diagonal is not None:
            if masks.per_alpha.device.type == "cpu":  # the diagonal kernel is timed on CPU only
                diagonals = len(layout.diagonal.offsets)
                return "block_sparse", f"{kind} sample, {diagonals} diagonals"
        elif layout.block_density <= AUTO_MAX_SAMPLE_DENSITY:
            return "block_sparse", f"{kind} sample, block density {layout.block_density:.2f}"
    mask = masks.layer(layer)
    if mask is None:
        return "sdpa", "dense mask"
    if mask.dtype != torch.bool:
        return "masked", "learnable DAM mask (gradients to α)"
    n = mask.shape[-1]
    if n < AUTO_MIN_SPARSE_LENGTH:
        return "sdpa", f"n={n} < {AUTO_MIN_SPARSE_LENGTH}: too short for sparsity to pay"
    layout = masks.layout(layer, block_size)
    if layout.diagonal is not None and mask.device.type == "cpu":  # timed on CPU only
        return "block_sparse", f"{len(layout.diagonal.offsets)} diagonals on cpu"
    density = layout.block_density
    most = AUTO_MAX_BLOCK_DENSITY
    if dropout > 0 and mask.device.type == "cpu":
        most = AUTO_MAX_BLOCK_DENSITY_DROPOUT
    if density > most:
        return "sdpa", f"block density {density:.2f} > {most}"
    if mask.device.type == "cuda" and dropout == 0:
        return "flex", f"block density {density:.2f} on CUDA"
    # On CPU block_sparse also for inference: FlexAttention's forward measured slower for every
    # pattern at n ≥ 2048 and for logsparse at every n (faster only at n = 512 for longformer,
    # star and the DAM_s band: benchmarks/results/attention.md), and compiles for 26–105 s first.
    return "block_sparse", f"block density {density:.2f} ≤ {most} on {mask.device.type}"


def sparse_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sparse_mask: AttentionMask | None = None,
    attention_profile: AttentionProfile | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of one BERT layer under M; returns ([B, n, H, d], no attention weights).

    attention_mask: bool [B, 1, n, n] from the registered SDPA mask builder (True = may attend,
    padding keys are False in every row), or None when nothing is padded. attention_profile:
    filled with this layer's attention probabilities (the held-out evaluation's gate).
    """
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    key_padding = None if attention_mask is None else ~attention_mask[:, 0, 0, :]
    masks = sparse_mask if sparse_mask is not None else AttentionMask(None)
    layer = module.layer_idx
    block_size, backend = masks.block_size, masks.backend
    needs_grad = torch.is_grad_enabled() and query.requires_grad
    if backend == "auto":
        backend, reason = choose_backend(masks, layer, block_size, dropout)
        if backend not in masks.logged:
            masks.logged.add(backend)
            log.info("attention backend auto → %s (%s)", backend, reason)
    if attention_profile is not None:
        mask = masks.layer(layer)
        # A few examples at a time: the profile needs the full [B, H, n, n] probabilities, 4 GiB
        # and more for an evaluation batch at n = 2048 (the recorders add up over calls).
        per_example = query.shape[1] * query.shape[2] ** 2 * PROFILE_TEMPORARIES * 4
        step = max(1, PROFILE_CHUNK_BYTES // per_example)
        for start in range(0, query.shape[0], step):
            rows = slice(start, start + step)
            padding = None if key_padding is None else key_padding[rows]
            probs = attention_probs(query[rows], key[rows], mask, padding, scaling)
            attention_profile.add(layer, probs, mask, padding)
    if backend == "masked":
        mask = masks.layer(layer)
        out = masked_attention(query, key, value, mask, key_padding, scaling, dropout)
    elif backend == "sdpa" or masks.dense:
        mask = masks.layer(layer)
        prepared = None if mask is None else masks.sdpa_mask(layer, query.dtype)
        out = sdpa_attention(query, key, value, mask, key_padding, scaling, dropout, prepared)
    elif backend == "block_sparse":
        out = block_sparse_attention(
            query, key, value, masks.layout(layer, block_size), key_padding, scaling, dropout,
            **masks.layer_sample(layer),
        )  # fmt: skip
    else:
        check_flex(query.device.type, needs_grad, dropout)
        block_mask = masks.flex_mask(layer, block_size, key_padding)
        out = flex_sparse_attention(query, key, value, block_mask, scaling)
    return out.transpose(1, 2).contiguous(), None


def register_attention() -> None:
    """Register the entry point and its padding-mask builder under `ATTENTION_IMPLEMENTATION`."""
    AttentionInterface.register(ATTENTION_IMPLEMENTATION, sparse_attention_forward)
    AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)
