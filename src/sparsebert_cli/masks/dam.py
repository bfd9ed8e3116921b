"""DAM, the Differentiable Attention Mask (PAPER.md §4): a learnable M(α) searched jointly with BERT.

    min over (w, α) of  L_pretrain(w; M(α)) + λ · ‖M(α)‖₁

M_ij = σ((α_ij + g₁ − g₂)/τ) with g₁, g₂ ~ Gumbel(0, 1) (Gumbel-sigmoid); with `hard` the forward
value is the 0/1 mask 1[α_ij + g₁ − g₂ > 0] and gradients flow through the soft value
(straight-through). After the search, M = 1[α > 0] (keep probability σ(α) > 0.5) is frozen.

DAM_u (`structure="unstructured"`) has one α per (layer, head, i, j); DAM_s (`"structured"`) one
α per (layer, head, distance |i − j|), expanded to a symmetric Toeplitz mask. `layers` is 1 when
all layers share the mask (the reference code). The Gumbel noise comes from the global torch RNG,
which the training loop seeds differently on each DDP rank. A mask learned at n serves shorter
sequences by cropping (`artifact.fit_to_length`).
"""

import torch
from omegaconf import DictConfig
from torch import nn

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import MaskConfig

STRUCTURES = ("unstructured", "structured")
L1_NORMS = ("sum", "mean")


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
    ) -> None:
        super().__init__()
        if structure not in STRUCTURES:
            raise SparseBertError(
                f"mask.structure={structure!r} is not a DAM structure; set mask.structure to "
                "unstructured (DAM_u) or structured (DAM_s)."
            )
        check_tau(tau)
        self.structure = structure
        self.tau = tau
        self.hard = hard
        shape = (layers, heads, n) if structure == "structured" else (layers, heads, n, n)
        self.alpha = nn.Parameter(torch.full(shape, float(init)))
        positions = torch.arange(n)
        distance = (positions[:, None] - positions[None, :]).abs()
        self.register_buffer("distance", distance, persistent=False)

    @classmethod
    def from_config(cls, cfg: MaskConfig | DictConfig, heads: int, layers: int) -> "DAM":
        """DAM of a `mask=dam` config for a model with `heads` heads and `layers` layers."""
        return cls(
            heads=heads,
            n=cfg.seq_len,
            layers=1 if cfg.share_layers else layers,
            structure=cfg.structure,
            tau=cfg.tau,
            hard=cfg.hard,
            init=cfg.init,
        )

    @property
    def kind(self) -> str:
        """The artifact kind: dam_s (structured) or dam_u (unstructured)."""
        return "dam_s" if self.structure == "structured" else "dam_u"

    def _expand(self, values: torch.Tensor) -> torch.Tensor:
        """Per-distance values [L, H, n] → Toeplitz [L, H, n, n]; unstructured values pass through."""
        return values[..., self.distance] if self.structure == "structured" else values

    def probs(self) -> torch.Tensor:
        """Keep probabilities σ(α): float [L, H, n, n] (the importance of each attention position)."""
        return self._expand(torch.sigmoid(self.alpha))

    def sample(self) -> torch.Tensor:
        """M ~ Gumbel-sigmoid(α, τ): float [L, H, n, n], exactly 0/1 when `hard`, gradients to α."""
        alpha = self.alpha.float()  # fp32 noise: in fp16, 1 − 1e-6 rounds to 1 and log1p(−1) = −∞
        u = torch.rand_like(alpha).clamp(1e-6, 1 - 1e-6)
        logistic = u.log() - (-u).log1p()  # g₁ − g₂ for g₁, g₂ ~ Gumbel(0, 1)
        soft = torch.sigmoid((alpha + logistic) / self.tau)
        if self.hard:
            # hard + (soft − soft) is exactly 0/1 forward, and has the soft value's gradient.
            soft = (soft > 0.5).to(soft.dtype) + (soft - soft.detach())
        return self._expand(soft.to(self.alpha.dtype))

    def binarize(self) -> torch.Tensor:
        """The final mask M = 1[α > 0]: bool [L, H, n, n]."""
        return self._expand(self.alpha.detach() > 0)

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
            kept = self._expand(torch.sigmoid(self.alpha.float())).sum()
        if norm == "mean":
            n = self.distance.shape[0]
            kept = kept / (self.alpha.shape[0] * self.alpha.shape[1] * n * n)
        return kept


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
