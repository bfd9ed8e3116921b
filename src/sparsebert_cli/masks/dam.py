"""DAM, the Differentiable Attention Mask (docs/paper.md §4): a learnable M(α) searched jointly with BERT.

    min over (w, α) of  L_pretrain(w; M(α)) + λ · ‖M(α)‖₁

M_ij = σ((α_ij + g₁ − g₂)/τ) with g₁, g₂ ~ Gumbel(0, 1) (Gumbel-sigmoid); with `hard` the forward
value is the 0/1 mask 1[α_ij + g₁ − g₂ > 0] and gradients flow through the soft value
(straight-through). After the search, M = 1[α > 0] (keep probability σ(α) > 0.5) is frozen.

DAM_u (`structure="unstructured"`) has one α per (layer, head, i, j); DAM_s (`"structured"`) one
α per (layer, head, distance |i − j|), expanded to a symmetric Toeplitz mask; block DAM
(`"block"`) one α per (layer, head, query block, key block) of `block_size` tokens, expanded to
the n × n mask, so its block density (the block_sparse backend's cost) is the complement of its
sparsity, exactly when block_size divides n. `layers` is 1 when all layers share the mask (the
reference code).

Instead of λ, a target sparsity t can steer the search (CoFi, Xia et al. 2022): the penalty is
N·[λ₁(s − t) + λ₂(s − t)²], N the entry count of ‖M‖₁ (1 with l1_norm=mean), the multipliers
λ₁, λ₂ trained by gradient ascent (`SparsityTarget`), and s the sparsity of the sign mask
1[α > 0] with the gradient of the expected sparsity ŝ = 1 − mean σ(α) (straight-through). Why not
ŝ alone: measured on the smoke model, the binarised mask reached 75 % sparsity while ŝ stayed at
51 % (α changes sign long before σ(α) saturates), so a controller on ŝ overshoots the mask that
is kept. Since N·ŝ = N − ‖M‖₁, the force on each α is that of λ·‖M‖₁ with
λ = −λ₁ − 2λ₂(s − t): at the target, −λ₁ is the λ that gives t. The controller brings s near t
but does not land on it in a short search (measured: 84 % for t = 0.8 on the smoke model; 55 %
after 200 steps on the frozen gated checkpoint at the default lagrangian_lr); the mask a search hands on is therefore
thresholded at the α that meets t (`binarize`), to the granularity of the structure, and mask.json
records the sign mask's sparsity beside it.

The Gumbel noise comes from the global torch RNG, which the training loop seeds differently on
each DDP rank. A mask learned at n serves shorter sequences by cropping (`artifact.fit_to_length`).
"""

import math

import torch
from omegaconf import DictConfig
from torch import nn

from sparsebert_cli.attention.block_sparse import expand_tiles
from sparsebert_cli.attention.diagonal import expand_distances
from sparsebert_cli.config import ModelConfig
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import (
    DAM_KINDS,
    DAM_STRUCTURES,
    L1_NORMS,
    MaskConfig,
    check_dam_u_size,
)


class DAM(nn.Module):
    def __init__(
        self,
        heads: int,
        n: int,
        layers: int = 1,
        structure: str = "unstructured",
        tau: float = 1.0,
        hard: bool = True,
        init: float = 0.0,
        block_size: int = ModelConfig.block_size,
        keep_diagonal_blocks: bool = False,
        target: "SparsityTarget | None" = None,
    ) -> None:
        super().__init__()
        if structure not in DAM_STRUCTURES:
            raise SparseBertError(
                f"mask.structure={structure!r} is not a DAM structure; set mask.structure to "
                "unstructured (DAM_u), structured (DAM_s) or block."
            )
        check_tau(tau)
        self.structure = structure
        self.tau = tau
        self.hard = hard
        self.n = n
        blocks = math.ceil(n / block_size)
        shape = {
            "unstructured": (layers, heads, n, n),
            "structured": (layers, heads, n),
            "block": (layers, heads, blocks, blocks),
        }[structure]
        self.alpha = nn.Parameter(torch.full(shape, float(init)))
        positions = torch.arange(n)
        self.block_size = block_size
        kept = torch.eye(blocks, dtype=torch.bool) if keep_diagonal_blocks else None
        self.register_buffer("kept_blocks", kept, persistent=False)  # [QB, KB] always kept
        # How many of the n × n entries each α covers (None: one each; int64, which `.half()`
        # leaves exact), so sums over the mask (‖M‖₁, sparsities, the target's threshold) need
        # no n × n tensor: a distance d covers 2(n − d) entries (d = 0: n), a tile its rows ×
        # columns below n.
        per_block = torch.bincount(positions // block_size, minlength=blocks)
        count = {
            "unstructured": None,
            "structured": torch.where(positions == 0, n, 2 * (n - positions)),
            "block": per_block[:, None] * per_block[None, :],
        }[structure]
        self.register_buffer("entry_count", count, persistent=False)
        self.target = target
        self._thresholded: tuple[tuple, torch.Tensor] | None = None  # (α version, kept per α)

    @classmethod
    def from_config(
        cls,
        cfg: MaskConfig | DictConfig,
        heads: int,
        layers: int,
        block_size: int = ModelConfig.block_size,
    ) -> "DAM":
        """DAM of a `mask=dam` config for a model with `heads` heads and `layers` layers
        (`block_size`: the tile of a block DAM, the model's `model.block_size`)."""
        if cfg.structure == "unstructured":
            check_dam_u_size(cfg.seq_len, heads, 1 if cfg.share_layers else layers)
        return cls(
            heads=heads,
            n=cfg.seq_len,
            layers=1 if cfg.share_layers else layers,
            structure=cfg.structure,
            tau=cfg.tau,
            hard=cfg.hard,
            init=cfg.init,
            block_size=block_size,
            keep_diagonal_blocks=cfg.keep_diagonal_blocks,
            target=None
            if cfg.target_sparsity is None
            else SparsityTarget(cfg.target_sparsity, cfg.target_warmup),
        )

    @property
    def kind(self) -> str:
        """The artifact kind: dam_u (unstructured), dam_s (structured) or dam_b (block)."""
        return DAM_KINDS[self.structure]

    def _expand(self, values: torch.Tensor) -> torch.Tensor:
        """Values per α → [L, H, n, n]: per distance [L, H, n] → Toeplitz, per block
        [L, H, QB, KB] → tiles (diagonal tiles set to 1 with keep_diagonal_blocks); unstructured
        values pass through."""
        if self.structure == "structured":
            return expand_distances(values, self.n)
        if self.structure == "block":
            return expand_tiles(self._tiles(values), self.block_size, self.n)
        return values

    def _tiles(self, values: torch.Tensor) -> torch.Tensor:
        """Block values [L, H, QB, KB] with the kept diagonal tiles set to 1."""
        if self.kept_blocks is None:
            return values
        return torch.where(self.kept_blocks, torch.ones_like(values), values)

    def probs(self) -> torch.Tensor:
        """Keep probabilities σ(α): float [L, H, n, n] (the importance of each attention position)."""
        return self._expand(torch.sigmoid(self.alpha))

    def sample(self) -> torch.Tensor:
        """M ~ Gumbel-sigmoid(α, τ): float [L, H, n, n], exactly 0/1 when `hard`, gradients to α."""
        return self._expand(self._sample_alpha())

    def sample_tiles(self) -> torch.Tensor:
        """A block DAM's sample per tile: float [L, H, QB, KB] (`sample` is its expansion)."""
        return self._tiles(self._sample_alpha())

    def sample_distances(self) -> torch.Tensor:
        """A DAM_s's sample per distance: float [L, H, n] (`sample` is its expansion)."""
        return self._sample_alpha()

    def _sample_alpha(self) -> torch.Tensor:
        """One Gumbel-sigmoid value per α (exactly 0/1 when `hard`, gradients to α)."""
        alpha = self.alpha.float()  # fp32 noise: in fp16, 1 − 1e-6 rounds to 1 and log1p(−1) = −∞
        u = torch.rand_like(alpha).clamp(1e-6, 1 - 1e-6)
        logistic = u.log() - (-u).log1p()  # g₁ − g₂ for g₁, g₂ ~ Gumbel(0, 1)
        soft = torch.sigmoid((alpha + logistic) / self.tau)
        if self.hard:
            # hard + (soft − soft) is exactly 0/1 forward, and has the soft value's gradient.
            soft = (soft > 0.5).to(soft.dtype) + (soft - soft.detach())
        return soft.to(self.alpha.dtype)

    def sign_sparsity(self) -> float:
        """The sparsity (percent) of the sign mask 1[α > 0], the mask the search is steering
        (the controller's s), counted per α."""
        return self._sparsity(self.alpha.detach() > 0)

    def binarize(self) -> torch.Tensor:
        """The final mask: bool [L, H, n, n]. Without a target M = 1[α > 0]; with one, M =
        1[α ≥ θ], θ the α threshold whose sparsity is closest to the target (entries that share
        an α, a DAM_s distance or a block's tile, stay together; kept diagonal tiles stay)."""
        return self._expand(self._binarized())

    def binarized_sparsity(self) -> float:
        """`stats.sparsity(binarize())` (percent), counted per α."""
        return self._sparsity(self._binarized())

    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever α is updated in place or replaced (an optimiser step, a loaded
        state); a fused optimiser or a write through .data does not change it, so caches keyed
        on it are also dropped when the mode changes (`train`)."""
        return self.alpha._version, self.alpha.data_ptr()

    def _binarized(self) -> torch.Tensor:
        """`binarize()` per α: bool, α's shape."""
        if self.target is None:
            return self.alpha.detach() > 0
        # Asked every step (the logged sparsity) and every eval forward: found once per α update.
        key = self.version
        if self._thresholded is None or self._thresholded[0] != key:
            self._thresholded = (key, self._meet_target())
        return self._thresholded[1]

    def train(self, mode: bool = True) -> "DAM":
        """A change of mode drops the kept threshold: α may have changed in ways its version
        does not show (a fused optimiser, a write through .data)."""
        self._thresholded = None
        return super().train(mode)

    def _meet_target(self) -> torch.Tensor:
        alpha = self.alpha.detach().float()
        if self.kept_blocks is not None:  # _expand sets those tiles to 1: keep them whatever θ
            alpha = alpha.masked_fill(self.kept_blocks, float("inf"))
        values, inverse = torch.unique(alpha, return_inverse=True)  # ascending
        count = torch.ones_like(alpha) if self.entry_count is None else self.entry_count
        entries = torch.zeros(len(values), dtype=torch.float64, device=alpha.device)
        entries.index_add_(0, inverse.view(-1), count.double().expand_as(alpha).reshape(-1))
        kept = entries.flip(0).cumsum(0).flip(0) / self.entries()  # kept at θ = values[i]
        theta = values[(kept - (1.0 - self.target.target)).abs().argmin()]
        return alpha >= theta

    def _entry_sum(self, values: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """The sum of the n × n expansion of per-α values, without expanding it."""
        values = (self._tiles(values) if self.structure == "block" else values).to(dtype)
        return (values if self.entry_count is None else values * self.entry_count.to(dtype)).sum()

    def _sparsity(self, kept: torch.Tensor) -> float:
        # float64: the kept entries of a long mask pass 2²⁴, where float32 stops counting by 1
        return 100.0 * (1.0 - self._entry_sum(kept, torch.float64).item() / self.entries())

    def l1(self, norm: str = "sum") -> torch.Tensor:
        """‖M‖₁ as the expected L1 of a sample, Σ σ(α), in fp32 even under autocast or `.half()`.

        E[M_ij] = σ(α_ij) for the Gumbel-sigmoid, so this is the expected number of kept entries,
        smooth in α: every entry is pushed down, unlike the reference code's L1 of the hard sample
        where dropped entries got no gradient. Entries are counted over the expanded n × n masks
        (once per shared mask). norm="sum" as in the paper; "mean" divides by the entry count.
        """
        if norm not in L1_NORMS:
            raise SparseBertError(
                f"mask.l1_norm={norm!r} is unknown; set mask.l1_norm=sum or mean."
            )
        with torch.autocast(device_type=self.alpha.device.type, enabled=False):
            kept = self._entry_sum(torch.sigmoid(self.alpha.float()))
        return kept / self.entries() if norm == "mean" else kept

    def entries(self) -> int:
        """How many entries ‖M‖₁ counts: L × H × n × n (once per shared mask)."""
        return self.alpha.shape[0] * self.alpha.shape[1] * self.n * self.n

    def expected_sparsity(self) -> torch.Tensor:
        """ŝ = 1 − mean σ(α) over the n × n entries: the expected sparsity of a sample (fp32)."""
        return 1 - self.l1("mean")


class SparsityTarget(nn.Module):
    """The Lagrangian λ₁(s − t) + λ₂(s − t)² that steers the mask's sparsity s to a target t
    (the caller scales it by ‖M‖₁'s entry count, see the module docstring).

    The multipliers λ₁, λ₂ (`multipliers`, starting at 0) are trained by gradient *ascent*: the
    value returned carries their negated gradient, so the optimiser's usual descent step raises
    the penalty while α and the weights lower it. While s < t, λ₁ falls below 0 and rewards
    sparsity; λ₂ only grows, tightening s around t. The target rises linearly from 0 to t over
    `warmup` steps, so the mask thins while the model learns.
    """

    def __init__(self, target: float, warmup: int = 0) -> None:
        super().__init__()
        self.target, self.warmup = target, warmup
        self.multipliers = nn.Parameter(torch.zeros(2))

    def target_at(self, step: int) -> float:
        """t at 0-based optimiser step `step`: linear warm-up from 0, then constant."""
        return self.target * min(step / self.warmup, 1.0) if self.warmup else self.target

    def forward(
        self, expected_sparsity: torch.Tensor, binarized_sparsity: float, target: float
    ) -> torch.Tensor:
        """λ₁(s − t) + λ₂(s − t)², s: the binarized sparsity's value, the expected one's gradient."""
        # 2λ − λ has the value λ (exactly, in floating point) and the gradient −∂/∂λ: ascent.
        lam = 2 * self.multipliers.detach() - self.multipliers
        gap = binarized_sparsity + (expected_sparsity - expected_sparsity.detach()) - target
        return lam[0] * gap + lam[1] * gap * gap


def check_tau(tau: float) -> None:
    """τ must be positive (it divides the logits)."""
    if not tau > 0:
        raise SparseBertError(f"mask.tau={tau} must be positive; set mask.tau=1.0.")


def annealed_tau(cfg: MaskConfig | DictConfig, step: int, total_steps: int) -> float:
    """τ at `step` of `total_steps`: constant `mask.tau`, or linear from it to `mask.tau_final`."""
    if cfg.tau_final is None:
        return cfg.tau
    check_tau(cfg.tau_final)
    progress = min(step / max(total_steps, 1), 1.0)
    return cfg.tau + (cfg.tau_final - cfg.tau) * progress
