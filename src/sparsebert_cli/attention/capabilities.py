"""What each attention backend can do, checked before a model is built: `validate` runs these
checks without importing the kernels or transformers (2 s a command)."""

from sparsebert_cli.config import BACKENDS
from sparsebert_cli.errors import SparseBertError


def check_backend(backend: str, mask_kind: str) -> None:
    """Fail early on an unknown backend or one that cannot learn a DAM mask."""
    if backend not in BACKENDS:
        raise SparseBertError(
            f"model.attention_backend={backend!r} is unknown; choose one of {', '.join(BACKENDS)}."
        )
    if mask_kind == "dam" and backend in ("sdpa", "block_sparse", "flex"):
        raise SparseBertError(
            f"model.attention_backend={backend} cannot learn a DAM mask (mask=dam or one of its "
            "presets): while the mask is soft, α needs the gradient of every entry. auto "
            "switches to block_sparse by itself for the steps whose sample is hard and sparse "
            "(a block DAM's or a DAM_s's); set model.attention_backend=auto (or masked)."
        )


def check_flex(device_type: str, training: bool, dropout: float) -> None:
    """Refuse what FlexAttention cannot do: a backward pass on CPU, attention dropout."""
    if training and device_type == "cpu":
        raise SparseBertError(
            "model.attention_backend=flex has no backward pass on CPU in torch 2.13; "
            "set model.attention_backend=block_sparse (or auto) to train on CPU."
        )
    if dropout > 0:
        raise SparseBertError(
            f"model.attention_backend=flex has no attention dropout (model.attention_dropout="
            f"{dropout}); set model.attention_dropout=0 or model.attention_backend=block_sparse."
        )
