"""Task metrics against hand-computed values, and GLUE submission files."""

import math

import pytest
from conftest import task_config

from sparsebert_cli.data.metrics import (
    TASK_METRICS,
    compute_metrics,
    write_submission,
)
from sparsebert_cli.errors import SparseBertError

# Binary example: labels 1 1 1 0 0 0, predictions 1 1 0 1 0 0 -> TP 2, FN 1, FP 1, TN 2.
BINARY_LABELS = [1, 1, 1, 0, 0, 0]
BINARY_PREDICTIONS = [1, 1, 0, 1, 0, 0]
ACCURACY = 4 / 6
F1 = 2 * 2 / (3 + 3)  # 2·TP / (predicted positives + actual positives)
MCC = (2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3)  # (TP·TN − FP·FN) / √(PP·PN·AP·AN) = 1/3

# Regression example: labels 1 2 3 4, predictions 1 3 2 4.
REGRESSION_LABELS = [1.0, 2.0, 3.0, 4.0]
REGRESSION_PREDICTIONS = [1.0, 3.0, 2.0, 4.0]
PEARSON = 0.8  # Σ dx·dy = 4, Σ dx² = Σ dy² = 5
SPEARMAN = 0.8  # ranks equal the values

EXPECTED = {
    "cola": {"mcc": MCC, "accuracy": ACCURACY, "headline": MCC},
    "sst2": {"accuracy": ACCURACY, "headline": ACCURACY},
    "mrpc": {"accuracy": ACCURACY, "f1": F1, "headline": F1},
    "qqp": {"accuracy": ACCURACY, "f1": F1, "headline": F1},
    "mnli": {"accuracy": ACCURACY, "headline": ACCURACY},
    "qnli": {"accuracy": ACCURACY, "headline": ACCURACY},
    "rte": {"accuracy": ACCURACY, "headline": ACCURACY},
    "wnli": {"accuracy": ACCURACY, "headline": ACCURACY},
    "polarity": {"accuracy": ACCURACY, "f1": F1, "headline": ACCURACY},
    "stsb": {"pearson": PEARSON, "spearman": SPEARMAN, "headline": PEARSON},
    "lee_sts": {"pearson": PEARSON, "spearman": SPEARMAN, "headline": PEARSON},
    "swag": {"accuracy": ACCURACY, "headline": ACCURACY},
}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_task_metrics_match_hand_computed_values(task):
    regression = TASK_METRICS[task][0] == "regression"
    predictions = REGRESSION_PREDICTIONS if regression else BINARY_PREDICTIONS
    labels = REGRESSION_LABELS if regression else BINARY_LABELS
    assert compute_metrics(task, predictions, labels) == pytest.approx(EXPECTED[task])


def test_every_task_has_hand_computed_expectations():
    assert set(EXPECTED) == set(TASK_METRICS)


def test_logits_are_turned_into_class_ids():
    logits = [[0.1, 0.9], [2.0, -1.0], [0.0, 3.0]]
    assert compute_metrics("sst2", logits, [1, 0, 0])["accuracy"] == pytest.approx(2 / 3)


def test_three_class_mcc_matches_gorodkin_formula():
    # Confusion (rows true, columns predicted): [[2,1,0],[0,2,0],[1,0,1]]; n=7, correct=5,
    # predicted per class (3,3,1), actual (3,2,2): (5·7 − 9−6−2) / √((49−19)(49−17)).
    labels = [0, 0, 0, 1, 1, 2, 2]
    predictions = [0, 0, 1, 1, 1, 0, 2]
    expected = (35 - 17) / math.sqrt(30 * 32)
    assert compute_metrics("cola", predictions, labels)["mcc"] == pytest.approx(expected)


def test_spearman_averages_tied_ranks():
    # Prediction ranks with a tie: 1, 2.5, 2.5, 4 against 1 2 3 4: Pearson of those ranks.
    result = compute_metrics("stsb", [0.1, 0.5, 0.5, 0.9], [1.0, 2.0, 3.0, 4.0])
    assert result["spearman"] == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_regression_scores_of_shape_n_by_1_are_accepted():
    result = compute_metrics("stsb", [[1.0], [3.0], [2.0], [4.0]], REGRESSION_LABELS)
    assert result["pearson"] == pytest.approx(PEARSON)


def test_constant_predictions_give_zero_correlations():
    assert compute_metrics("cola", [1, 1, 1, 1], [0, 1, 0, 1])["mcc"] == 0.0
    assert compute_metrics("stsb", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["pearson"] == 0.0


def test_unknown_task_raises_with_the_known_ones():
    with pytest.raises(SparseBertError, match="Unknown task 'squad'.*mrpc"):
        compute_metrics("squad", [1], [1])


def test_mrpc_submission_has_server_name_header_and_labels(tmp_path):
    path = write_submission("mrpc", [1, 0, 1], [0, 1, 2], ["0", "1"], tmp_path)
    assert path == tmp_path / "MRPC.tsv"
    assert path.read_text() == "index\tprediction\n0\t1\n1\t0\n2\t1\n"


def test_rte_submission_writes_label_names_from_logits(tmp_path):
    path = write_submission(
        "rte", [[0.9, 0.1], [0.2, 0.8]], [7, 8], ["entailment", "not_entailment"], tmp_path
    )
    assert path.read_text() == "index\tprediction\n7\tentailment\n8\tnot_entailment\n"


def test_mnli_matched_and_mismatched_submissions_have_their_server_names(tmp_path):
    names = ["entailment", "neutral", "contradiction"]
    matched = write_submission("mnli", [2], [0], names, tmp_path, split="test")
    mismatched = write_submission("mnli", [1], [0], names, tmp_path, split="test_mismatched")
    assert (matched.name, mismatched.name) == ("MNLI-m.tsv", "MNLI-mm.tsv")
    assert mismatched.read_text() == "index\tprediction\n0\tneutral\n"


def test_stsb_submission_writes_floats(tmp_path):
    path = write_submission("stsb", [4.2, 0.123456], [0, 1], [], tmp_path)
    assert path.name == "STS-B.tsv"
    assert path.read_text() == "index\tprediction\n0\t4.200\n1\t0.123\n"


@pytest.mark.parametrize(
    ("task", "name"),
    [
        ("cola", "CoLA.tsv"),
        ("sst2", "SST-2.tsv"),
        ("qqp", "QQP.tsv"),
        ("qnli", "QNLI.tsv"),
        ("wnli", "WNLI.tsv"),
    ],
)
def test_glue_submission_file_names(tmp_path, task, name):
    assert write_submission(task, [0], [0], ["0", "1"], tmp_path).name == name


def test_non_glue_predictions_are_named_after_task_and_split(tmp_path):
    path = write_submission("polarity", [1], [3], ["neg", "pos"], tmp_path, split="dev")
    assert path.name == "polarity-dev.tsv"
    assert path.read_text() == "index\tprediction\n3\tpos\n"


@pytest.mark.parametrize("task", sorted(TASK_METRICS))
def test_the_metric_table_agrees_with_each_task_yaml(task):
    """TASK_METRICS is the one home of a task's metrics and headline (SQuAD's are in
    qa_metrics); each of its tasks has a config of the table's kind."""
    config = task_config(task)
    kind, metrics, headline = TASK_METRICS[task]
    assert (config.name, config.kind) == (task, kind)
    assert headline in metrics
