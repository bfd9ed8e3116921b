"""The official SQuAD answer normalisation, exact match and F1, and the no-answer threshold, on
hand-computed cases."""

import pytest

from sparsebert_cli.data.qa_metrics import (
    best_null_threshold,
    exact_match,
    f1_score,
    normalize_answer,
    squad_metrics,
)


def test_normalisation_drops_case_punctuation_articles_and_extra_whitespace():
    assert normalize_answer("An apple,  a pear and THE plum.") == "apple pear and plum"


def test_normalisation_keeps_articles_inside_words():
    assert normalize_answer("Theatre of the Absurd") == "theatre of absurd"


def test_punctuation_inside_a_word_joins_its_parts():
    assert normalize_answer("the Black-Sea!") == "blacksea"


def test_exact_match_compares_normalised_answers():
    assert exact_match("the Black Sea", "Black Sea.") == 1.0


def test_f1_is_the_token_overlap_f1():
    # common {black, forest}: precision 2/3, recall 2/4
    assert f1_score("in the Black Forest", "the Black Forest of Germany") == pytest.approx(4 / 7)


def test_f1_counts_a_repeated_token_once_per_gold_occurrence():
    assert f1_score("ten ten", "ten") == pytest.approx(2 / 3)


def test_an_empty_answer_scores_one_only_against_no_answer_in_v2():
    v2 = (f1_score("", "", v2=True), f1_score("", "ten", v2=True), f1_score("the", "", v2=True))
    assert v2 == (1.0, 0.0, 1.0)


def test_v1_f1_of_two_answers_that_share_no_token_is_zero_even_when_both_normalise_to_nothing():
    """The v1.1 script has no empty-answer rule: 'the the' against '' shares no token, F1 0 (the
    v2.0 rule gave 1)."""
    assert (f1_score("", ""), f1_score("the the", "")) == (0.0, 0.0)
    assert squad_metrics({"q": ""}, {"q": ["the the"]}) == {"exact": 1.0, "f1": 0.0}


def test_v1_reports_exact_and_f1_only():
    assert squad_metrics({"a": "ten"}, {"a": ["ten"], "b": []}) == {"exact": 0.5, "f1": 0.5}


def test_a_question_scores_its_best_gold_answer():
    metrics = squad_metrics({"q": "Warsaw Poland"}, {"q": ["Warsaw", "Warsaw, Poland"]})
    assert metrics == {"exact": 1.0, "f1": 1.0}


def test_unanswerable_questions_split_the_scores_into_has_ans_and_no_ans():
    predictions = {"a": "ten", "b": "", "c": "Tanzania"}
    metrics = squad_metrics(predictions, {"a": ["ten"], "b": [], "c": []}, v2=True)
    assert metrics == {
        "exact": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "HasAns_exact": 1.0,
        "HasAns_f1": 1.0,
        "NoAns_exact": 0.5,
        "NoAns_f1": 0.5,
    }


def test_a_missing_prediction_scores_zero_even_for_no_answer():
    assert squad_metrics({}, {"b": []}) == {"exact": 0.0, "f1": 0.0}


def test_the_null_threshold_answers_the_questions_that_raise_f1():
    # all null: 1 (b); + a: 2; + c: 3; + b (wrong span): 2 -> answer a and c, t = odds of c
    odds = {"a": -2.0, "b": 1.0, "c": 0.5}
    texts = {"a": "ten", "b": "x", "c": "Tanzania"}
    golds = {"a": ["ten"], "b": [], "c": ["Tanzania"]}
    assert best_null_threshold(odds, texts, golds) == 0.5


def test_when_no_answer_everywhere_is_best_the_threshold_is_below_all_odds():
    assert best_null_threshold({"b": 1.0}, {"b": "x"}, {"b": []}) == 0.0


def test_questions_with_equal_null_odds_are_answered_together():
    odds = {"a": 0.0, "b": 0.0}
    threshold = best_null_threshold(odds, {"a": "ten", "b": "x"}, {"a": ["ten"], "b": []})
    assert threshold == -1.0


def test_v2_drops_gold_answers_that_normalise_to_nothing_as_the_official_script():
    """A gold "The" normalises to "": it matched an empty prediction (exact 1.0); the v2.0 script
    drops it, so the question scores against its real answer only. v1.1's script keeps it."""
    golds = {"q": ["The", "cat"]}
    assert squad_metrics({"q": ""}, golds, v2=True)["exact"] == 0.0
    assert squad_metrics({"q": "the cat"}, golds, v2=True)["exact"] == 1.0
    assert squad_metrics({"q": ""}, golds)["exact"] == 1.0
    assert squad_metrics({"q": ""}, {"q": ["The"]}, v2=True)["exact"] == 1.0  # only "" is left
