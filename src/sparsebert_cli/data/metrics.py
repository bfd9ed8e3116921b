"""Task metrics (scikit-learn's and scipy's, no `evaluate.load`, which needs the hub), and GLUE
test-server submission files.

Headline per task (the paper's table column): CoLA Matthews correlation, STS-B and lee_sts
Pearson, MRPC and QQP F1 (the paper's QQP 87.1 matches BERT-base's dev F1, not its ≈ 91 accuracy),
all others accuracy. F1 is binary with class 1 (equivalent / duplicate / pos) as positive.
Correlations are 0.0 where undefined (constant predictions or labels), as scikit-learn does for MCC.
scikit-learn and scipy are imported when a metric is computed (1.6 s): `validate` reads the table.
"""

from pathlib import Path

import numpy as np

from sparsebert_cli.data.glue import GLUE_TASKS
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.runs import atomic_write_text

# task -> (problem type, metrics, headline)
TASK_METRICS = {
    "cola": ("classification", ("mcc", "accuracy"), "mcc"),
    "sst2": ("classification", ("accuracy",), "accuracy"),
    "mrpc": ("classification", ("accuracy", "f1"), "f1"),
    "qqp": ("classification", ("accuracy", "f1"), "f1"),
    "stsb": ("regression", ("pearson", "spearman"), "pearson"),
    "mnli": ("classification", ("accuracy",), "accuracy"),
    "qnli": ("classification", ("accuracy",), "accuracy"),
    "rte": ("classification", ("accuracy",), "accuracy"),
    "wnli": ("classification", ("accuracy",), "accuracy"),
    "polarity": ("classification", ("accuracy", "f1"), "accuracy"),
    "lee_sts": ("regression", ("pearson", "spearman"), "pearson"),
    "swag": ("multiple_choice", ("accuracy",), "accuracy"),  # class id: the chosen ending
}


# The head's outputs where the task kind fixes them, not the data: one score, a span's start and
# end, one per SWAG ending (task.num_labels must agree; classification counts its labels).
FIXED_OUTPUTS = {"regression": 1, "question_answering": 2, "multiple_choice": 4}


def task_metrics(task_name: str) -> tuple[str, tuple[str, ...], str]:
    """(problem type, metric names, headline metric) of a task."""
    if task_name not in TASK_METRICS:
        raise SparseBertError(
            f"Unknown task '{task_name}': metrics are defined for {sorted(TASK_METRICS)}. Pick one "
            "of them (custom data go in with task.data_files under one of these tasks)."
        )
    return TASK_METRICS[task_name]


def compute_metrics(task_name: str, predictions, labels) -> dict[str, float]:
    """The task's metrics and `headline`, from class ids or logits [N, C] (classification and
    multiple choice) or scores [N] / [N, 1] (regression), and the true labels."""
    kind, names, headline = task_metrics(task_name)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if kind != "regression":
        if predictions.ndim == 2:
            predictions = predictions.argmax(axis=-1)
        predictions, labels = predictions.astype(int), labels.astype(int)
    else:
        predictions, labels = predictions.reshape(-1).astype(float), labels.astype(float)
    functions = {
        "accuracy": accuracy,
        "f1": binary_f1,
        "mcc": matthews_correlation,
        "pearson": pearson,
        "spearman": spearman,
    }
    results = {name: functions[name](predictions, labels) for name in names}
    results["headline"] = results[headline]
    return results


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, predictions))


def binary_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of class 1; 0.0 when neither the predictions nor the labels have a class 1."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class MCC (Gorodkin's R_K), the usual MCC for two classes; 0.0 where undefined."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, predictions))


def _correlation(statistic, predictions: np.ndarray, labels: np.ndarray) -> float:
    """scipy's correlation statistic, 0.0 where it is undefined (a constant input)."""
    if np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    return float(statistic(predictions, labels).statistic)


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, predictions, labels)


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman's ρ, tied values sharing the mean of their ranks."""
    from scipy.stats import spearmanr

    return _correlation(spearmanr, predictions, labels)


def submission_path(task_name: str, directory: Path, split: str) -> Path:
    """GLUE's server name for a GLUE test split (MRPC.tsv, MNLI-mm.tsv…), else `<task>-<split>.tsv`."""
    layout = GLUE_TASKS.get(task_name)
    if layout is not None and split in layout.submissions:
        return Path(directory) / layout.submissions[split]
    return Path(directory) / f"{task_name}-{split}.tsv"


def write_submission(
    task_name: str,
    predictions,
    indices,
    label_names: list[str],
    directory: Path,
    split: str = "test",
) -> Path:
    """Write `index<TAB>prediction` lines as the GLUE server reads them; returns the file.

    Class predictions (class ids or logits) are written as `label_names[id]` — the labels as the
    source data writes them (0/1 for CoLA, SST-2, MRPC, QQP, WNLI; entailment/… for MNLI, QNLI,
    RTE; 0–3 for SWAG's endings); regression predictions as floats with three decimals.
    """
    kind, _, _ = task_metrics(task_name)
    predictions = np.asarray(predictions)
    if kind != "regression":
        if predictions.ndim == 2:
            predictions = predictions.argmax(axis=-1)
        values = [label_names[int(p)] for p in predictions]
    else:
        values = [f"{float(p):.3f}" for p in predictions.reshape(-1)]
    path = submission_path(task_name, directory, split)
    lines = ["index\tprediction"] + [f"{int(i)}\t{v}" for i, v in zip(indices, values, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
