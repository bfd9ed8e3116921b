"""The empty-row rule: detected, warned about, zero weights, and no NaN forward or backward."""

import warnings

import pytest
import torch

from sparsebert_cli.attention.masked import MASK_PENALTY
from sparsebert_cli.masks.empty_rows import (
    EmptyAttentionRowWarning,
    empty_query_rows,
    masked_softmax,
    searched_mask_warning,
)


def window_mask() -> torch.Tensor:
    """[H=1, 3, 3]: query 0 → key 0; query 1 → keys 0, 1; query 2 → key 2."""
    return torch.tensor([[[1, 0, 0], [1, 1, 0], [0, 0, 1]]], dtype=torch.bool)


PADDING = torch.tensor([[False, False, True]])  # [B=1, n=3]: key 2 is padding


def test_rows_emptied_by_padding_are_detected():
    """Query 0 of this mask attends to key 2 only, which is padding."""
    mask = torch.tensor([[[0, 0, 1], [1, 1, 0], [0, 0, 1]]], dtype=torch.bool)
    with pytest.warns(EmptyAttentionRowWarning):
        empty = empty_query_rows(mask, PADDING)
    assert empty.tolist() == [[[True, False, True]]]


def test_a_padding_query_without_a_key_is_zeroed_without_a_warning():
    """A band mask leaves the padding queries far past the text with no key in every padded
    batch; their output is discarded, so the warning would only alarm."""
    scores = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = empty_query_rows(window_mask(), PADDING)
        weights = masked_softmax(scores, window_mask(), PADDING)
    assert empty.tolist() == [[[False, False, True]]]
    assert weights[0, 0, 2].tolist() == [0.0, 0.0, 0.0]


def test_rows_emptied_by_the_mask_alone_are_detected_without_padding():
    mask = torch.tensor([[[1, 1], [0, 0]]], dtype=torch.bool)
    with pytest.warns(EmptyAttentionRowWarning):
        assert empty_query_rows(mask, None).tolist() == [[False, True]]


def test_no_warning_when_every_row_keeps_a_key():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = empty_query_rows(window_mask(), torch.zeros(1, 3, dtype=torch.bool))
    assert not empty.any()


def test_empty_row_gets_zero_weights_and_others_sum_to_one():
    scores = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    weights = masked_softmax(scores, window_mask(), PADDING)
    assert weights[0, 0, 2].tolist() == [0.0, 0.0, 0.0]
    assert weights[0, 0, :2].sum(dim=-1).tolist() == pytest.approx([1.0, 1.0])


def test_allowed_keys_get_the_softmax_of_their_scores():
    scores = torch.tensor([[[[0.0, 9.0, 9.0], [1.0, 2.0, 9.0], [9.0, 9.0, 3.0]]]])
    weights = masked_softmax(scores, window_mask(), None)
    expected = torch.tensor(
        [[1.0, 0.0, 0.0], [*torch.softmax(torch.tensor([1.0, 2.0]), 0), 0.0], [0, 0, 1]]
    )
    assert torch.allclose(weights[0, 0], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_nan_in_forward_or_backward_with_an_empty_row(dtype):
    scores = torch.randn(1, 1, 3, 3, dtype=dtype, requires_grad=True)
    values = torch.randn(1, 1, 3, 2, dtype=dtype, requires_grad=True)
    out = masked_softmax(scores, window_mask(), PADDING) @ values  # row 2: a padding query
    out.sum().backward()
    assert out[0, 0, 2].tolist() == [0.0, 0.0]
    assert torch.isfinite(out).all()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(values.grad).all()
    assert scores.grad[0, 0, 2].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("padded", [False, True], ids=["no-padding", "padding"])
def test_a_float_mask_attends_as_its_boolean_mask_with_the_empty_row_rule(padded):
    """A hard DAM sample (float 0/1, per head or per example) adds (M − 1)·c instead of a fill:
    the same output and q/k/v gradients as the boolean mask, empty rows (by M, by padding) zero,
    and M's gradient c·∂L/∂score on its kept entries, 0 on the dropped ones."""
    from sparsebert_cli.attention.masked import masked_attention

    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 1, 4, 4, generator=generator) for _ in range(3))
    # query 0: two keys; 1: none; 2: key 3 only (padding, when padded); 3: keys 1–3
    rows = [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1]]
    head_mask = torch.tensor([rows], dtype=torch.bool)
    padding = torch.tensor([[False, False, False, True]]).expand(2, -1) if padded else None
    upstream = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    for mask in (head_mask, head_mask[None].expand(2, -1, -1, -1)):  # [H, n, n], [B, H, n, n]
        results = []
        for m in (mask, mask.float().requires_grad_(True)):
            inputs = [x.clone().requires_grad_(True) for x in (q, k, v)]
            with pytest.warns(EmptyAttentionRowWarning):
                out = masked_attention(*inputs, m, padding, 0.5)
            out.backward(upstream)
            results.append((out, *(x.grad for x in inputs)))
        for boolean, float_ in zip(*results, strict=True):
            assert torch.allclose(boolean, float_, atol=1e-6)
        out = results[1][0]
        assert out[:, :, 1].abs().max() == 0  # the row M empties
        assert (out[:, :, 2].abs().max() == 0) == padded  # its one key is padding
        # M's gradient: c times the scores' gradient under the boolean mask
        scores = (q @ k.mT * 0.5).requires_grad_(True)
        with pytest.warns(EmptyAttentionRowWarning):
            (masked_softmax(scores, mask, padding) @ v).backward(upstream)
        expected = scores.grad * MASK_PENALTY
        expected = expected.sum(dim=0) if mask.dim() == 3 else expected
        assert expected.abs().max() > 1  # rows with several keys: a gradient to compare
        assert torch.allclose(m.grad, expected, rtol=1e-4, atol=1e-3)
        assert m.grad[~mask].abs().max() == 0


def test_a_searched_mask_that_leaves_queries_without_a_key_is_reported():
    """A search hands its mask on: queries it empties (a block DAM driven to 100 % sparsity by a
    short search) are said with the share, the empty maps and what keeps more."""
    dam_u, block = {"kind": "dam_u"}, {"kind": "dam_b", "params": {"block_size": 2}}
    mask = torch.ones(2, 2, 4, 4, dtype=torch.bool)
    assert searched_mask_warning(mask, dam_u) is None
    mask[0, 1] = False  # one (layer, head) map keeps nothing
    mask[1, 0, 3] = False  # and one query of another
    said = searched_mask_warning(mask, dam_u)
    assert said.startswith("the searched mask leaves 31.2% of the queries without a key (1 of 4")
    assert said.endswith(
        "More is kept with a target sparsity (mask.lam=0 mask.target_sparsity=0.9) or a smaller "
        "mask.lam."
    )
    assert "refuse" not in said
    # a block DAM without its own tiles kept: those first (a smaller λ did not help a short search
    # of a model whose attention does not matter yet: Adam moves α by ~mask.lr whatever λ is)
    said = searched_mask_warning(mask, block)
    assert "with mask.keep_diagonal_blocks=true (each query keeps its own tile), a target" in said
    block["params"]["keep_diagonal_blocks"] = True
    assert "keep_diagonal_blocks" not in searched_mask_warning(mask, block)
    targeted = searched_mask_warning(mask, {**dam_u, "target_sparsity": 90.0})  # lower that one
    assert targeted.endswith("More is kept with a lower mask.target_sparsity.")
    shared = searched_mask_warning(mask[:1], dam_u)  # share_layers: one mask serves every layer
    assert "(1 of 2 head (one mask for every layer) maps keep nothing)" in shared


def test_a_mask_that_allows_nothing_in_a_layer_is_refused_and_its_search_says_so():
    """A search driven to 100 % sparsity (a λ too large: mask.lam=1e5) handed on a mask that
    pre-training used with only the generic empty-row warning: its layers never attended."""
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.masks.empty_rows import check_keeps_attention

    mask = torch.ones(2, 2, 4, 4, dtype=torch.bool)
    check_keeps_attention(mask)
    mask[1] = False
    with pytest.raises(SparseBertError, match=r"allows no entry in layer\(s\) \[1\] .* mask.lam"):
        check_keeps_attention(mask)
    with pytest.raises(SparseBertError, match="again with a lower mask.target_sparsity, or"):
        check_keeps_attention(mask, {"kind": "dam_u", "target_sparsity": 90.0})
    said = searched_mask_warning(mask, {"kind": "dam_u"})
    assert "layer(s) [1], so the stages refuse to train with it" in said
    assert "zero their attention" not in said  # it said both
    mask[1, :, 0] = True
    assert "the runs that use it zero their attention" in searched_mask_warning(mask, {})
    with pytest.raises(SparseBertError, match="allows no entry in every layer"):
        check_keeps_attention(torch.zeros(1, 2, 4, 4, dtype=torch.bool))


def test_a_searched_mask_that_allows_nothing_is_refused_to_train_with_but_a_trained_model_loads(
    tmp_path,
):
    """Pre-training refuses the empty searched mask; a model already saved with one still loads
    (evaluate must be able to score it)."""
    from omegaconf import OmegaConf

    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.masks.artifact import save_mask
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.runs import layout

    empty = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    save_mask(layout(tmp_path).artifacts, empty, {"kind": "dam_s"})
    cfg = OmegaConf.create({"name": "from_run", "from_run": str(tmp_path)})
    with pytest.raises(SparseBertError, match="allows no entry in every layer"):
        MaskSource.from_config(cfg, heads=2, layers=2, n=8)
    save_mask(tmp_path / "model", empty, {"kind": "dam_s"})
    assert MaskSource.from_checkpoint(tmp_path / "model", 2, 2, "dam_s").kind == "fixed"


def test_a_fixed_pattern_that_keeps_nothing_is_refused_with_its_own_fix():
    """mask=random at a density that keeps nothing at this n was told to search again with a
    smaller λ or a target sparsity, advice for a searched mask."""
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.masks.config import MaskConfig
    from sparsebert_cli.masks.source import MaskSource

    with pytest.raises(SparseBertError, match="mask=random keeps no entry there at n=16") as e:
        MaskSource.from_config(MaskConfig(name="random", density=1e-4), heads=2, layers=1, n=16)
    assert "λ" not in str(e.value)
