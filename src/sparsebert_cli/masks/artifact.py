"""Mask artifacts: `mask.safetensors` (the bool mask M [L, H, n, n]), `mask.json` and `mask.png`.

mask.json holds kind, params, n, layers, heads, sparsity (overall, per layer, per head, in
percent), source_run, any extra metadata the writer passes (λ, τ, …) and the sha256 of
mask.safetensors, so a json paired with another run's tensor file is caught. Loading reads only
safetensors and JSON (never unpickles) and checks everything; a problem is a SparseBertError.
Writes are atomic; mask.json is written last.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as dump_safetensors

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import (
    ATTENTION_TOPK,
    DAM_KINDS,
    MASK_FILE,
    META_FILE,
    PLOT_FILE,
)
from sparsebert_cli.masks.patterns import PATTERNS
from sparsebert_cli.masks.stats import sparsity, sparsity_per_head, sparsity_per_layer
from sparsebert_cli.runs import atomic_write

MASK_KINDS = (*DAM_KINDS.values(), ATTENTION_TOPK, *PATTERNS)


def fit_to_length(mask: torch.Tensor, n: int) -> torch.Tensor:
    """M [..., N, N] for sequences of length n ≤ N: the top-left n × n crop (positions 0…n−1).

    A mask says nothing about positions ≥ N, structured (Toeplitz) masks included, so longer
    sequences are an error rather than a guess.
    """
    check_length(mask.shape[-1], n)
    return mask[..., :n, :n]


def check_length(learned: int, n: int) -> None:
    """Refuse sequences longer than the n = `learned` a mask was made for."""
    if n > learned:
        raise SparseBertError(
            f"the attention mask covers sequences of at most n={learned} tokens but got length "
            f"{n}; set the stage's length ≤ {learned} (data.seq_len; task.seq_len when "
            f"fine-tuning), or search the mask again at this length: data.seq_len={n}, with "
            f"mask.seq_len={n} for a DAM."
        )


def save_mask(directory: Path, mask: torch.Tensor, meta: dict) -> list[Path]:
    """Write M (bool [L, H, n, n]) and its metadata into `directory`; returns the files written.

    `meta` needs "kind" (dam_u, dam_s, dam_b, attention_topk or a pattern name) and may hold "params", "source_run" and
    anything else worth keeping; n, layers, heads, sparsity and sha256 are computed from M.
    """
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[-1] != mask.shape[-2]:
        raise ValueError(
            f"a mask artifact is bool [L, H, n, n], got {mask.dtype} {list(mask.shape)}"
        )
    if meta.get("kind") not in MASK_KINDS:
        raise ValueError(f"mask kind {meta.get('kind')!r} is not one of {MASK_KINDS}")
    directory = Path(directory)
    mask = mask.detach().cpu().contiguous()
    data = dump_safetensors({"mask": mask})
    tensor_path = atomic_write(directory / MASK_FILE, lambda tmp: Path(tmp).write_bytes(data))
    layers, heads, n, _ = mask.shape
    record = {
        "params": {},
        "source_run": None,
        **meta,
        "n": n,
        "layers": layers,
        "heads": heads,
        "sparsity": {
            "overall": sparsity(mask),
            "per_layer": sparsity_per_layer(mask),
            "per_head": sparsity_per_head(mask),
        },
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    from sparsebert_cli.masks.plots import plot_mask_grid  # matplotlib: not for load_mask

    plot_path = plot_mask_grid(
        mask, directory / PLOT_FILE, f"{meta['kind']} mask, n={n}, sparsity {sparsity(mask):.1f}%"
    )
    text = json.dumps(record, indent=2) + "\n"
    meta_path = atomic_write(
        directory / META_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8")
    )
    return [tensor_path, plot_path, meta_path]


def _bad(path: Path, problem: str) -> SparseBertError:
    return SparseBertError(
        f"the mask artifact {path} {problem}; re-run the stage that wrote it, or point mask.from "
        "(model.from for a checkpoint) at another completed run."
    )


def read_meta(path: Path) -> dict:
    """A mask.json, its fields checked; a damaged one is refused, naming the file."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        raise _bad(path, f"is not valid JSON (truncated or corrupt: {reason})") from None
    if not isinstance(meta, dict):
        raise _bad(path, "does not hold a JSON object")
    for key, kind in (("kind", str), ("n", int), ("layers", int), ("heads", int), ("sha256", str)):
        if not isinstance(meta.get(key), kind):
            raise _bad(path, f"has no valid {key!r} field")
    if not isinstance(meta.get("params", {}), dict):
        raise _bad(path, "has a 'params' field that is not an object")
    if meta["kind"] not in MASK_KINDS:
        raise _bad(path, f"has kind {meta['kind']!r}, not one of {', '.join(MASK_KINDS)}")
    return meta


def load_mask(
    directory: Path, heads: int | None = None, layers: int | None = None, n: int | None = None
) -> tuple[torch.Tensor, dict]:
    """Read and check the mask artifact in `directory`: (M bool [L, H, n, n], mask.json).

    heads must match when given; layers when given must equal the mask's L, or the mask has L = 1
    (shared by all layers); n when given crops M to sequences of length n (`fit_to_length`).
    """
    directory = Path(directory)
    tensor_path, meta_path = directory / MASK_FILE, directory / META_FILE
    for path in (tensor_path, meta_path):
        if not path.is_file():
            raise _bad(path, "does not exist (a mask artifact is mask.safetensors + mask.json)")
    meta = read_meta(meta_path)
    data = tensor_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise _bad(
            tensor_path,
            f"does not match {META_FILE} (sha256 differs: truncated, modified, or from another run)",
        )
    try:
        tensors = load_safetensors(data)
    except SafetensorError as error:
        raise _bad(tensor_path, f"is not a valid safetensors file ({error})") from None
    mask = tensors.get("mask")
    expected = (meta["layers"], meta["heads"], meta["n"], meta["n"])
    if set(tensors) != {"mask"} or mask.dtype != torch.bool or tuple(mask.shape) != expected:
        found = {k: f"{v.dtype} {list(v.shape)}" for k, v in tensors.items()}
        raise _bad(
            tensor_path, f"holds {found}, but {META_FILE} says 'mask': bool {list(expected)}"
        )
    if heads is not None and meta["heads"] != heads:
        raise SparseBertError(
            f"the mask in {directory} has {meta['heads']} heads but the model has {heads}; use a "
            f"model with {meta['heads']} heads (a new one: model.num_heads={meta['heads']}; a "
            f"pre-trained one has its own) or a mask searched for {heads} heads (search it with "
            "this model)."
        )
    if layers is not None and meta["layers"] not in (1, layers):
        raise SparseBertError(
            f"the mask in {directory} has {meta['layers']} layers but the model has {layers}; use "
            f"a model with {meta['layers']} layers (a new one: model.num_layers={meta['layers']}) "
            "or a mask shared by all layers (mask.share_layers=true in its search)."
        )
    return (mask if n is None else fit_to_length(mask, n)), meta
