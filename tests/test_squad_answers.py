"""SQuAD post-processing (logits → answer texts, null odds) and the masked QA model."""

import datasets
import numpy as np
import pytest
import torch
from conftest import task_config, tiny_model
from omegaconf import OmegaConf

from sparsebert_cli.config import ModelConfig
from sparsebert_cli.data.squad import SquadData, best_span, featurize
from sparsebert_cli.data.tokenizer import embedded_tokenizer_folder, tokenizer_from_folder
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.modeling import (
    MaskSource,
    SparseBertForQuestionAnswering,
    build_task_model,
    load_checkpoint,
    save_checkpoint,
)
from sparsebert_cli.stages.finetune import check_stored_mask_covers

COUNTING = "one two three four five six seven eight nine ten"
VOCAB, N = 60, 24


def test_the_best_span_maximises_start_plus_end_logit():
    start, end = np.array([0.0, 5.0, 1.0]), np.array([0.0, 1.0, 5.0])
    assert best_span(start, end, n_best=3, max_answer_length=30) == (10.0, 1, 2)


def test_a_span_ending_before_it_starts_is_never_chosen():
    start, end = np.array([0.0, 1.0, 5.0]), np.array([0.0, 5.0, 2.0])
    assert best_span(start, end, n_best=3, max_answer_length=30) == (7.0, 2, 2)


def test_spans_are_at_most_max_answer_length_tokens():
    start, end = np.array([0.0, 5.0, 1.0]), np.array([0.0, 2.0, 5.0])
    assert best_span(start, end, n_best=3, max_answer_length=1) == (7.0, 1, 1)


def test_only_the_n_best_starts_and_ends_are_tried():
    # all pairs: (0, 0) scores 9; the 2 best starts are 1, 2 and the 2 best ends 0, 2
    start, end = np.array([0.0, 5.0, 4.0]), np.array([9.0, 0.0, 1.0])
    assert best_span(start, end, n_best=2, max_answer_length=30) == (6.0, 1, 2)


def counting_data(v2: bool, threshold: float | None) -> SquadData:
    """One question over COUNTING in four windows (tokens 0-3, 2-5, 4-7, 6-9), answer four five."""
    tokenizer = tokenizer_from_folder(embedded_tokenizer_folder())
    config = task_config("squad", seq_len=9, doc_stride=2)
    examples = {
        "id": ["q"],
        "title": [""],
        "context": [COUNTING],
        "question": ["what?"],
        "answer_texts": [["four five"]],
        "answer_starts": [[COUNTING.index("four")]],
    }
    features = featurize(examples, [0], tokenizer, config, training=False)
    return SquadData(
        name="squad",
        examples={"dev": datasets.Dataset.from_dict(examples)},
        splits={"dev": datasets.Dataset.from_dict(features)},
        pad_token_id=0,
        seq_len=9,
        n_best=20,
        max_answer_length=30,
        version_2_with_negative=v2,
        null_score_threshold=threshold,
    )


def counting_logits() -> np.ndarray:
    """Window 1 points at "four five" (positions 5, 6: score 10); [CLS] scores 2 in window 0."""
    logits = np.zeros((4, 9, 2))
    logits[1, 5, 0] = logits[1, 6, 1] = 5.0
    logits[0, 0, :] = 1.0
    return logits


def test_the_answer_is_the_best_span_over_all_windows():
    texts, _ = counting_data(False, None).spans("dev", counting_logits())
    assert texts == {"q": "four five"}


def test_null_odds_are_the_lowest_cls_score_minus_the_best_span_score():
    _, odds = counting_data(True, None).spans("dev", counting_logits())
    assert odds == {"q": -10.0}


def test_v2_answers_nothing_when_the_null_odds_exceed_the_threshold():
    result = counting_data(True, -20.0).evaluate("dev", counting_logits())
    assert result.predictions == {"q": ""} and result.metrics["exact"] == 0.0


def test_v2_answers_the_span_when_the_null_odds_are_below_the_threshold():
    result = counting_data(True, 0.0).evaluate("dev", counting_logits())
    assert result.predictions == {"q": "four five"} and result.metrics["HasAns_exact"] == 1.0


def test_v1_scores_with_exact_and_f1_and_writes_no_null_odds():
    result = counting_data(False, None).evaluate("dev", counting_logits())
    assert result.metrics == {"exact": 1.0, "f1": 1.0, "headline": 1.0}
    assert result.null_odds == {}


def tiny() -> ModelConfig:
    return tiny_model()


def window_source(n: int = N) -> MaskSource:
    cfg = OmegaConf.structured(MaskConfig(name="window", window=2))
    return MaskSource.from_config(cfg, heads=2, layers=2, n=n)


def qa_batch(n: int = N) -> dict:
    ids = torch.randint(1, VOCAB, (2, n), generator=torch.Generator().manual_seed(3))
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }


def test_the_qa_model_gives_start_and_end_logits_per_token_and_a_loss():
    torch.manual_seed(0)
    model = build_task_model(tiny(), window_source(), 2, "question_answering", None, VOCAB)
    out = model(
        **qa_batch(), start_positions=torch.tensor([1, 0]), end_positions=torch.tensor([2, 0])
    )
    assert out.start_logits.shape == out.end_logits.shape == (2, N)
    assert out.loss.ndim == 0


def test_a_qa_checkpoint_reloads_as_the_qa_model_with_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = build_task_model(tiny(), window_source(), 2, "question_answering", None, VOCAB).eval()
    save_checkpoint(model, tmp_path, {})
    loaded = load_checkpoint(tmp_path, tiny())
    with torch.no_grad():
        assert isinstance(loaded, SparseBertForQuestionAnswering)
        assert torch.equal(loaded(**qa_batch()).start_logits, model(**qa_batch()).start_logits)


def test_sequences_longer_than_the_mask_are_refused_with_the_fix():
    # SQuAD at 384 with a mask built or searched at a shorter length: no silent extension
    model = build_task_model(tiny(), window_source(n=16), 2, "question_answering", None, VOCAB)
    with pytest.raises(
        SparseBertError, match=r"at most n=16 tokens but got length 24.*mask.seq_len=24"
    ):
        model(**qa_batch())


def test_squad_refuses_a_stored_mask_shorter_than_its_windows_before_training():
    """Every SQuAD window is padded to task.seq_len: that is its longest batch."""
    task = task_config("squad")
    with pytest.raises(
        SparseBertError, match=r"covers n=16 tokens, but task=squad feeds it batches of up to 384"
    ):
        check_stored_mask_covers(window_source(n=16), 384, task)
    check_stored_mask_covers(window_source(n=16), 16, task)
    empty = MaskSource("fixed", mask=torch.zeros(1, 2, 16, 16, dtype=torch.bool))
    with pytest.raises(SparseBertError, match="allows no entry in every layer"):
        check_stored_mask_covers(empty, 16, task)  # fine-tuning would train without attention
