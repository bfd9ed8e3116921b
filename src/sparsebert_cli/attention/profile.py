"""Where a model's heads attend, and the "uses attention" gate of a pre-trained model.

A verdict about which attention positions matter means something only for a model that has
learned to use attention: one that predicts masked tokens from a bag of words spreads each query's
mass almost uniformly over the keys. During the held-out MLM evaluation the attention
probabilities of a few batches are reduced, per layer and head, to the mean mass a query puts on
the key one position before it (offset −1), on itself (the diagonal), one after it (+1), on [CLS]
(key 0) and on the final [SEP] (the last real token), beside the uniform mass 1/(keys the query may
attend to). The gate: some head puts at least `GATE_NEIGHBOUR_RATIO` × the uniform mass on offset
−1 or +1, and held-out MLM accuracy is at least `GATE_MLM_ACCURACY`.
"""

import torch

from sparsebert_cli import runs

GATE_NEIGHBOUR_RATIO = 3.0
GATE_MLM_ACCURACY = 0.20
OFFSETS = {"prev": -1, "diag": 0, "next": 1}
STATS = (*OFFSETS, "cls", "sep", "uniform")  # the per-head columns, in this order


def real_tokens(probs: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
    """bool [B, n]: the positions of the batch that are tokens, not padding."""
    if key_padding is not None:
        return ~key_padding
    return torch.ones(probs.shape[0], probs.shape[-1], dtype=torch.bool, device=probs.device)


class AttentionProfile:
    """Running means of attention mass per layer and head (see the module docstring)."""

    def __init__(self, distances: int = 0) -> None:
        # distances > 0 adds "dist1".."dist{distances}": the mass at |i − j| = d (both sides;
        # d = 0 is "diag")
        self.stats = (*STATS, *(f"dist{d}" for d in range(1, distances + 1)))
        self.sums: dict[int, torch.Tensor] = {}  # layer -> [H, len(stats)] summed over queries
        self.counts: dict[int, torch.Tensor] = {}  # layer -> [len(stats)] queries counted

    @torch.no_grad()
    def add(
        self,
        layer: int,
        probs: torch.Tensor,
        mask: torch.Tensor | None,
        key_padding: torch.Tensor | None,
    ) -> None:
        """probs [B, H, n, n] of one layer; M [H, n, n] or None; key_padding bool [B, n] or None."""
        batch, heads, n, _ = probs.shape
        probs, real = probs.float(), real_tokens(probs, key_padding)
        allowed = real[:, None, None, :].expand(batch, heads, n, n)
        if mask is not None:
            allowed = allowed & (mask.detach() > 0.5)[None]
        sums, counts = [], []
        for offset in OFFSETS.values():
            lo, hi = max(0, -offset), n - max(0, offset)  # queries i with a key i + offset
            mass = torch.diagonal(probs, offset=offset, dim1=-2, dim2=-1)  # [B, H, hi - lo]
            both = real[:, lo:hi] & real[:, lo + offset : hi + offset]  # [B, hi - lo]
            sums.append((mass * both[:, None]).sum(dim=(0, 2)))
            counts.append(both.sum())
        last = (real.sum(-1) - 1).clamp(min=0)  # the final [SEP]: the last real token
        sep = probs.gather(-1, last[:, None, None, None].expand(batch, heads, n, 1))[..., 0]
        keys = allowed.sum(-1).clamp(min=1)  # [B, H, n]
        columns = [probs[..., 0], sep, 1.0 / keys]
        for d in range(1, len(self.stats) - len(STATS) + 1):
            both_sides = torch.zeros_like(probs[..., 0])  # [B, H, n]: query i's keys i ± d
            if d < n:  # a batch shorter than d has no key at distance d: mass 0
                both_sides[..., : n - d] += torch.diagonal(probs, offset=d, dim1=-2, dim2=-1)
                both_sides[..., d:] += torch.diagonal(probs, offset=-d, dim1=-2, dim2=-1)
            columns.append(both_sides)
        for column in columns:
            sums.append((column * real[:, None]).sum(dim=(0, 2)))
            counts.append(real.sum())
        total = torch.stack(sums, dim=-1).cpu()
        count = torch.stack(counts).float().cpu()
        self.sums[layer] = self.sums.get(layer, 0) + total
        self.counts[layer] = self.counts.get(layer, 0) + count

    def heads(self) -> list[list[dict[str, float]]]:
        """Per layer, per head: the mean mass of each statistic (`STATS`, then the distances)."""
        table = []
        for layer in sorted(self.sums):
            means = self.sums[layer] / self.counts[layer].clamp(min=1)
            table.append([dict(zip(self.stats, row.tolist(), strict=True)) for row in means])
        return table

    def metrics(self, mlm_accuracy: float) -> dict[str, float]:
        """The gate and its ingredients, as flat metric keys."""
        heads = [head for layer in self.heads() for head in layer]
        if not heads:
            return {}
        ratio = max(max(h["prev"], h["next"]) / h["uniform"] for h in heads)
        passed = ratio >= GATE_NEIGHBOUR_RATIO and mlm_accuracy >= GATE_MLM_ACCURACY
        mean = {s: sum(h[s] for h in heads) / len(heads) for s in ("diag", "cls", "sep")}
        return {
            "eval/attn_neighbour_ratio": ratio,
            "eval/attn_diag_mass": mean["diag"],
            "eval/attn_cls_mass": mean["cls"],
            "eval/attn_sep_mass": mean["sep"],
            runs.USES_ATTENTION: float(passed),
        }


class AttentionMap:
    """Mean attention probability per layer, head, query and key over the real (query, key)
    pairs of the batches seen (padding left out); passed as a forward's `attention_profile`
    like AttentionProfile. Batches padded to fewer than `n` positions fill the top-left corner."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sums: dict[int, torch.Tensor] = {}  # layer -> [H, n, n]
        self.counts: dict[int, torch.Tensor] = {}  # layer -> [n, n] pairs counted

    @torch.no_grad()
    def add(
        self,
        layer: int,
        probs: torch.Tensor,
        mask: torch.Tensor | None,
        key_padding: torch.Tensor | None,
    ) -> None:
        """probs [B, H, m, m] (m ≤ n) of one layer; key_padding bool [B, m] or None."""
        heads, m = probs.shape[1], probs.shape[-1]
        real = real_tokens(probs, key_padding)
        pairs = (real[:, :, None] & real[:, None, :]).float()  # [B, m, m]
        if layer not in self.sums:
            self.sums[layer] = torch.zeros(heads, self.n, self.n)
            self.counts[layer] = torch.zeros(self.n, self.n)
        self.sums[layer][:, :m, :m] += (probs.float() * pairs[:, None]).sum(0).cpu()
        self.counts[layer][:m, :m] += pairs.sum(0).cpu()

    def mean(self) -> torch.Tensor:
        """[L, H, n, n]: the mean probability of each entry (0 where no real pair was seen)."""
        return torch.stack(
            [self.sums[layer] / self.counts[layer].clamp(min=1) for layer in sorted(self.sums)]
        )
