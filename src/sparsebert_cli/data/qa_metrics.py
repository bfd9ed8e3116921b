"""SQuAD's official metrics (the v1.1 and v2.0 evaluation scripts), computed in the project.

Answers are normalised as the official scripts do: lower-case, drop ASCII punctuation, drop the
articles a/an/the, collapse whitespace. Exact match compares normalised strings; F1 is the
token-overlap F1 of the normalised tokens; with v2.0 an empty side (no answer) scores 1 against
another empty side (v1.1: 0, no token is shared). A question scores its best over its gold answers; a question without gold
answers (SQuAD v2.0) has the single gold answer "". Scores are fractions (the scripts print ×100).

The no-answer threshold: a v2.0 prediction is "" when its null odds (null score minus the best
span's score) exceed the threshold; `best_null_threshold` picks the one that maximises total F1.
"""

import re
import string
from collections import Counter
from functools import partial

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, without punctuation and articles, whitespace collapsed to single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, v2: bool = False) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if v2 and (not predicted or not expected):
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(metric, prediction: str, golds: list[str], v2: bool = False) -> float:
    """The score against the closest gold answer ("" stands for no answer). With `v2`, as the
    official v2.0 script (not v1.1's), golds that normalise to nothing ("The") are dropped first."""
    if v2:
        golds = [gold for gold in golds if normalize_answer(gold)]
    return max(metric(prediction, gold) for gold in golds or [""])


def squad_metrics(
    predictions: dict[str, str], golds: dict[str, list[str]], v2: bool = False
) -> dict[str, float]:
    """exact and f1 over all questions of `golds` (a missing prediction scores 0); with `v2`, as
    the v2.0 script, also HasAns_* and NoAns_* over the answerable and the unanswerable ones
    (each when there are any)."""
    exact, f1 = {}, {}
    f1_of = partial(f1_score, v2=v2)
    for question, gold in golds.items():
        found = question in predictions
        exact[question] = (
            best_over_golds(exact_match, predictions[question], gold, v2) if found else 0.0
        )
        f1[question] = best_over_golds(f1_of, predictions[question], gold, v2) if found else 0.0
    metrics = {"exact": _mean(exact.values()), "f1": _mean(f1.values())}
    if v2:
        has_answer = [q for q, g in golds.items() if g]
        no_answer = [q for q, g in golds.items() if not g]
        for name, subset in (("HasAns", has_answer), ("NoAns", no_answer)):
            if subset:
                metrics[f"{name}_exact"] = _mean(exact[q] for q in subset)
                metrics[f"{name}_f1"] = _mean(f1[q] for q in subset)
    return metrics


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def best_null_threshold(
    null_odds: dict[str, float], span_texts: dict[str, str], golds: dict[str, list[str]]
) -> float:
    """The threshold t (answer "" when null odds > t) with the highest total F1 on `golds`.

    Questions are answered in order of increasing null odds; the threshold is the odds of the
    last one answered (ties move together), or min(odds) − 1 when answering none is best.
    `span_texts` holds each question's best non-null answer.
    """
    order = sorted(null_odds, key=null_odds.get)
    f1_v2 = partial(f1_score, v2=True)
    total = best = sum(best_over_golds(f1_v2, "", golds[q], v2=True) for q in order)
    threshold = null_odds[order[0]] - 1.0 if order else 0.0
    for position, question in enumerate(order):
        gold = golds[question]
        total += best_over_golds(f1_v2, span_texts[question], gold, v2=True)
        total -= best_over_golds(f1_v2, "", gold, v2=True)
        tied_with_next = (
            position + 1 < len(order) and null_odds[order[position + 1]] == null_odds[question]
        )
        if not tied_with_next and total > best:
            best, threshold = total, null_odds[question]
    return threshold
