"""SQuAD pre-processing: the official JSON layout, document-stride windows, and answer spans
mapped to tokens and back to the characters of the context."""

import json

import pytest
from conftest import task_config

from sparsebert_cli.data.squad import (
    featurize,
    read_squad_json,
    squad_examples,
    token_span,
    window_starts,
)
from sparsebert_cli.errors import SparseBertError

COUNTING = "one two three four five six seven eight nine ten"  # one token per word
ACCENTS = "Marie  Skłodowska-Curie   was born in\tVienna's  Café  Central."
SQUAD_DOCUMENT = {
    "data": [
        {
            "title": "T",
            "paragraphs": [
                {
                    "context": "Ten rivers.",
                    "qas": [
                        {
                            "id": "a",
                            "question": "How many?",
                            "answers": [{"text": "Ten", "answer_start": 0}],
                        },
                        {"id": "b", "question": "Why?", "answers": [], "is_impossible": True},
                    ],
                }
            ],
        }
    ]
}


def batch_of(context: str, answer: str | None, question: str = "what?") -> dict:
    start = [context.index(answer)] if answer else []
    return {
        "id": ["q"],
        "question": [question],
        "context": [context],
        "answer_texts": [[answer] if answer else []],
        "answer_starts": [start],
    }


def test_windows_start_doc_stride_tokens_apart_until_the_context_is_covered():
    assert window_starts(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]


def test_a_stride_longer_than_the_window_starts_the_next_window_after_its_end():
    assert window_starts(5, 4, 8) == [(0, 4), (4, 1)]


def test_a_short_context_is_one_window():
    assert window_starts(3, 4, 2) == [(0, 3)]


def test_token_span_takes_the_tokens_overlapping_the_answer_characters():
    assert token_span([(0, 3), (4, 8), (9, 12), (13, 15)], 4, 12) == (1, 2)


def test_an_answer_straddling_a_window_boundary_points_at_cls_in_that_window(tokenizer):
    # [CLS] what ? [SEP] + 4 context tokens + [SEP]: windows of tokens 0-3, 2-5, 4-7, 6-9
    config = task_config("squad", seq_len=9, doc_stride=2)
    out = featurize(batch_of(COUNTING, "four five"), [0], tokenizer, config, training=True)
    assert (out["start_positions"], out["end_positions"]) == ([0, 5, 0, 0], [0, 6, 0, 0])


def test_the_window_holding_the_answer_points_at_its_tokens(tokenizer):
    config = task_config("squad", seq_len=9, doc_stride=2)
    out = featurize(batch_of(COUNTING, "four five"), [0], tokenizer, config, training=True)
    assert tokenizer.decode(out["input_ids"][1][5:7]) == "four five"


def test_windows_carry_the_question_as_segment_a_and_the_context_as_segment_b(tokenizer):
    config = task_config("squad", seq_len=9, doc_stride=2)
    out = featurize(batch_of(COUNTING, None), [0], tokenizer, config, training=False)
    assert tokenizer.decode(out["input_ids"][1]) == "[CLS] what? [SEP] three four five six [SEP]"
    assert out["token_type_ids"][1] == [0, 0, 0, 0, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("answer", ["Skłodowska-Curie", "Café  Central"])
def test_token_positions_map_back_to_the_answer_as_written(tokenizer, answer):
    config = task_config("squad", seq_len=64)
    trained = featurize(batch_of(ACCENTS, answer), [0], tokenizer, config, training=True)
    kept = featurize(batch_of(ACCENTS, answer), [0], tokenizer, config, training=False)
    first, offsets = kept["context_offset"][0], kept["token_offsets"][0]
    start = offsets[trained["start_positions"][0] - first][0]
    end = offsets[trained["end_positions"][0] - first][1]
    assert ACCENTS[start:end] == answer


def test_a_question_without_answer_points_at_cls(tokenizer):
    out = featurize(batch_of(COUNTING, None), [0], tokenizer, task_config("squad"), training=True)
    assert (out["start_positions"], out["end_positions"]) == ([0], [0])


def test_evaluation_windows_keep_their_question_index_and_context_offsets(tokenizer):
    config = task_config("squad", seq_len=9, doc_stride=2)
    out = featurize(batch_of(COUNTING, None), [7], tokenizer, config, training=False)
    assert out["example_index"] == [7, 7, 7, 7]
    assert out["token_offsets"][1] == [[8, 13], [14, 18], [19, 23], [24, 27]]


def test_a_sequence_too_short_for_the_question_is_refused(tokenizer):
    with pytest.raises(SparseBertError, match=r"task.seq_len=4 leaves no room .* 'q'"):
        featurize(
            batch_of(COUNTING, None), [0], tokenizer, task_config("squad", seq_len=4), training=True
        )


def test_the_official_layout_reads_into_one_row_per_question(tmp_path):
    (tmp_path / "dev-v2.0.json").write_text(json.dumps(SQUAD_DOCUMENT))
    columns = read_squad_json(tmp_path / "dev-v2.0.json")
    assert columns == {
        "id": ["a", "b"],
        "title": ["T", "T"],
        "context": ["Ten rivers.", "Ten rivers."],
        "question": ["How many?", "Why?"],
        "answer_texts": [["Ten"], []],
        "answer_starts": [[0], []],
    }


def test_a_file_outside_the_official_layout_is_refused(tmp_path):
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(SparseBertError, match="official JSON layout"):
        read_squad_json(tmp_path / "dev-v1.1.json")


@pytest.mark.parametrize("source", ["data_dir", "data_files"])
def test_evaluation_needs_and_reads_only_the_dev_file(tmp_path, source):
    """A machine holding only the dev file could not evaluate: the train file was required (and
    parsed in full)."""
    (tmp_path / "dev-v2.0.json").write_text(json.dumps(SQUAD_DOCUMENT))
    where = (
        {"data_dir": str(tmp_path)}
        if source == "data_dir"
        else {"data_files": {"dev": str(tmp_path / "dev-v2.0.json")}}
    )
    config = task_config("squad_v2", **where)
    assert list(squad_examples(config, tmp_path / "cache", train=False)) == ["dev"]
    with pytest.raises(SparseBertError, match="train"):
        squad_examples(config, tmp_path / "cache")


def test_v2_data_under_the_v1_task_is_refused(tmp_path):
    """SQuAD v2.0 files under task=squad were scored as v1.1: every unanswerable question counted
    as never matched, and the run wrote its low F1 without a word."""
    (tmp_path / "dev-v2.0.json").write_text(json.dumps(SQUAD_DOCUMENT))
    files = {"data_files": {"dev": str(tmp_path / "dev-v2.0.json")}}
    with pytest.raises(SparseBertError, match=r"has 1 of 2 questions without an answer.*squad_v2"):
        squad_examples(task_config("squad", **files), tmp_path / "cache", train=False)
    answered = squad_examples(task_config("squad_v2", **files), tmp_path / "cache", train=False)
    assert answered["dev"]["answer_texts"] == [["Ten"], []]
