"""The empty-row rule: detected, warned about, zero weights, and no NaN forward or backward."""

import warnings

import pytest
import torch

from sparsebert_cli.masks.empty_rows import (
    EmptyAttentionRowWarning,
    empty_query_rows,
    masked_softmax,
)


def window_mask() -> torch.Tensor:
    """[H=1, 3, 3]: query 0 → key 0; query 1 → keys 0, 1; query 2 → key 2."""
    return torch.tensor([[[1, 0, 0], [1, 1, 0], [0, 0, 1]]], dtype=torch.bool)


PADDING = torch.tensor([[False, False, True]])  # [B=1, n=3]: key 2 is padding


def test_rows_emptied_by_padding_are_detected():
    with pytest.warns(EmptyAttentionRowWarning):
        empty = empty_query_rows(window_mask(), PADDING)
    assert empty.tolist() == [[[False, False, True]]]


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
    with pytest.warns(EmptyAttentionRowWarning):
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
    with pytest.warns(EmptyAttentionRowWarning):
        out = masked_softmax(scores, window_mask(), PADDING) @ values
    out.sum().backward()
    assert out[0, 0, 2].tolist() == [0.0, 0.0]
    assert torch.isfinite(out).all()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(values.grad).all()
    assert scores.grad[0, 0, 2].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("padding", [None, PADDING], ids=["no-padding", "padding"])
def test_a_float_mask_attends_as_its_boolean_mask_with_the_empty_row_rule(padding):
    """A hard DAM sample (float 0/1) adds (M − 1)·c instead of a fill: the same weights, output
    and gradients as the boolean mask, empty rows (by M, by padding) zero."""
    from sparsebert_cli.attention.masked import masked_attention

    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 1, 3, 4, generator=generator) for _ in range(3))
    mask = torch.tensor([[[1, 0, 0], [0, 0, 0], [0, 0, 1]]], dtype=torch.bool)
    padding = None if padding is None else padding.expand(2, -1)
    results = []
    for m in (mask, mask.float().requires_grad_(True)):
        inputs = [x.clone().requires_grad_(True) for x in (q, k, v)]
        with pytest.warns(EmptyAttentionRowWarning):
            out = masked_attention(*inputs, m, padding, 0.5)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)))
        results.append((out, *(x.grad for x in inputs)))
    for boolean, float_ in zip(*results, strict=True):
        assert torch.allclose(boolean, float_, atol=1e-6)
    out = results[1][0]
    assert out[:, :, 1].abs().max() == 0  # the row M empties
    assert (out[:, :, 2].abs().max() == 0) == (padding is not None)  # its one key is padding
