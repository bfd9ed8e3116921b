"""The fixed mask M a stage uses, from its `mask` config: a named pattern or a searched mask.

The searched masks (`mask=dam`, learnable: `dam.DAM.from_config`; `mask=attention_topk`) and
`mask=checkpoint` (the mask stored with the model, resolved by the modeling code) are not fixed
masks and are refused here.
"""

import torch
from omegaconf import DictConfig

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.artifact import load_mask
from sparsebert_cli.masks.config import SEARCHED_MASKS, MaskConfig
from sparsebert_cli.masks.patterns import PATTERNS, pattern_mask, unknown_mask_error
from sparsebert_cli.runs import LATEST, layout


def build_fixed_mask(cfg: MaskConfig | DictConfig, n: int, heads: int, layers: int) -> torch.Tensor:
    """M as bool [L or 1, heads, n, n] (1: shared by all layers).

    For `name=from_run`, `cfg.from_run` must already be a run directory (the caller resolves
    "latest" with `sparsebert_cli.runs.resolve`); the mask is read from `<run_dir>/artifacts/`
    and cropped to n.
    """
    if cfg.name in PATTERNS:
        return pattern_mask(cfg, n, heads)[None]
    if cfg.name == "from_run":
        if cfg.from_run in (None, "", LATEST):
            raise SparseBertError(
                f"mask.from={cfg.from_run!r} is not a run directory; pass "
                "mask.from=<a search run directory> (or mask.from=latest through a stage, which "
                "resolves it)."
            )
        mask, _ = load_mask(layout(cfg.from_run).artifacts, heads=heads, layers=layers, n=n)
        return mask
    if cfg.name in SEARCHED_MASKS:
        raise SparseBertError(
            f"mask={cfg.name} is made by `sparsebert search mask={cfg.name}`, not a fixed mask; "
            "then use it with mask=from_run mask.from=<that run directory or latest>."
        )
    if cfg.name == "checkpoint":
        raise SparseBertError(
            "mask=checkpoint means the mask stored with the model checkpoint; use it with "
            "model.from=<a pretrain run>, or name a mask (e.g. mask=dense)."
        )
    raise unknown_mask_error(cfg.name, [*PATTERNS, *SEARCHED_MASKS, "from_run", "checkpoint"])
