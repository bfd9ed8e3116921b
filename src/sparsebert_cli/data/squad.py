"""SQuAD v1.1 and v2.0: questions from the hub or the official JSON files, BERT features over
document-stride windows, and post-processing of start/end logits into answer texts.

Pre-processing follows BERT's original run_squad: the question keeps its first
`task.max_query_length` tokens; the context is cut into windows of the tokens that fit in
`task.seq_len` after `[CLS] question [SEP]` and before the last `[SEP]`; each window starts
`task.doc_stride` tokens after the previous one (or right after its end when it is shorter than
the stride), so long contexts are covered with overlapping windows. A training window that does
not hold the whole answer points at [CLS] (position 0), as a v2.0 question without answer does.
Each context token keeps its character offsets in the original context, so answers are cut from
the context exactly as written (unicode, accents and runs of whitespace included).

Post-processing: in each window the `task.n_best` best start and end tokens of the context form
the candidate spans (start ≤ end, at most `task.max_answer_length` tokens); the best span over all
of a question's windows, by start + end logit, is its answer. v2.0: the null score is the lowest
[CLS] start + end logit over the windows, the null odds are null score − best span score, and the
answer is "" when the odds exceed `task.null_score_threshold`, or, when that is null, the
threshold with the best F1 on the split being scored (the dev set: "tuned on dev").
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsebert_cli.data.config import splits_read
from sparsebert_cli.data.hub import hub_split_name, load_hub_dataset, require_splits
from sparsebert_cli.data.metrics import FIXED_OUTPUTS
from sparsebert_cli.data.padding import padded_inputs
from sparsebert_cli.data.qa_metrics import best_null_threshold, squad_metrics
from sparsebert_cli.errors import SparseBertError

# The official file names in task.data_dir, by version (v2.0: version_2_with_negative).
OFFICIAL_FILES = {
    False: {"train": "train-v1.1.json", "dev": "dev-v1.1.json"},
    True: {"train": "train-v2.0.json", "dev": "dev-v2.0.json"},
}
EXAMPLE_COLUMNS = ("id", "title", "context", "question", "answer_texts", "answer_starts")


@dataclass
class QAResult:
    """What one split's logits give: metrics (fractions), answers and null odds by question id."""

    metrics: dict[str, float]
    predictions: dict[str, str]
    null_odds: dict[str, float]


@dataclass
class SquadData:
    name: str
    examples: dict  # split -> datasets.Dataset with EXAMPLE_COLUMNS
    # split -> features: input_ids, token_type_ids, attention_mask, and start_positions,
    # end_positions (train) or example_index, context_offset, token_offsets (the others)
    splits: object
    pad_token_id: int
    seq_len: int
    n_best: int
    max_answer_length: int
    version_2_with_negative: bool
    null_score_threshold: float | None
    num_labels: int = FIXED_OUTPUTS["question_answering"]  # the QA head's: start and end
    kind: str = "question_answering"
    label_names: tuple = ()

    def longest_batch(self) -> int:
        """The most tokens a batch can have: every window is padded to task.seq_len."""
        return self.seq_len

    def collate(self, batch: list[dict]) -> dict:
        """Tensors for a batch, padded to task.seq_len (so logits of all batches stack); the
        bookkeeping columns (example_index, offsets) stay behind."""
        import torch

        tensors = padded_inputs(batch, self.seq_len, self.pad_token_id)
        for name in ("start_positions", "end_positions"):
            if name in batch[0]:
                tensors[name] = torch.tensor([e[name] for e in batch], dtype=torch.long)
        return tensors

    def spans(self, split: str, logits) -> tuple[dict[str, str], dict[str, float]]:
        """Each question's best non-null answer text and its null odds, from logits [F, n, 2]."""
        examples, features = self.examples[split], self.splits[split]
        logits = np.asarray(logits, dtype=np.float64)
        contexts = examples["context"]
        best: dict[int, tuple[float, str]] = {}
        null: dict[int, float] = {}
        for f, (example, first, offsets) in enumerate(
            zip(
                features["example_index"],
                features["context_offset"],
                features["token_offsets"],
                strict=True,
            )
        ):
            start, end = logits[f, :, 0], logits[f, :, 1]
            null[example] = min(null.get(example, np.inf), float(start[0] + end[0]))
            last = first + len(offsets)
            found = best_span(
                start[first:last], end[first:last], self.n_best, self.max_answer_length
            )
            if found is not None and (example not in best or found[0] > best[example][0]):
                score, i, j = found
                best[example] = (score, contexts[example][offsets[i][0] : offsets[j][1]])
        texts, odds = {}, {}
        for index, question in enumerate(examples["id"]):
            score, text = best.get(index, (None, ""))
            texts[question] = text
            odds[question] = 0.0 if score is None else null[index] - score
        return texts, odds

    def evaluate(self, split: str, logits) -> QAResult:
        """Answers, null odds and the official metrics (headline: F1) of a split with answers."""
        texts, odds = self.spans(split, logits)
        examples = self.examples[split]
        golds = dict(zip(examples["id"], examples["answer_texts"], strict=True))
        if not self.version_2_with_negative:
            metrics = squad_metrics(texts, golds)
            return QAResult({**metrics, "headline": metrics["f1"]}, texts, {})
        threshold = self.null_score_threshold
        if threshold is None:
            threshold = best_null_threshold(odds, texts, golds)
        predictions = {q: "" if odds[q] > threshold else text for q, text in texts.items()}
        metrics = {**squad_metrics(predictions, golds, v2=True), "null_threshold": threshold}
        return QAResult({**metrics, "headline": metrics["f1"]}, predictions, odds)


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, n_best: int, max_answer_length: int
) -> tuple[float, int, int] | None:
    """(score, start, end) of the best span among the n_best starts × n_best ends with
    start ≤ end < start + max_answer_length; None when there is none (no tokens)."""
    starts = np.argsort(-start_logits, kind="stable")[:n_best]
    ends = np.argsort(-end_logits, kind="stable")[:n_best]
    found = None
    for i in starts:
        for j in ends:
            if i <= j < i + max_answer_length:
                score = float(start_logits[i] + end_logits[j])
                if found is None or score > found[0]:
                    found = (score, int(i), int(j))
    return found


def window_starts(length: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """(first token, token count) of the windows that cover `length` context tokens, each at most
    `budget` long, each starting min(stride, previous window's length) after the previous one."""
    windows, start = [], 0
    while True:
        size = min(length - start, budget)
        windows.append((start, size))
        if start + size >= length:
            return windows
        start += min(size, stride)


def token_span(offsets: list, start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last token whose characters overlap [start_char, end_char); None if none do."""
    inside = [i for i, (a, b) in enumerate(offsets) if a < end_char and b > start_char]
    return (inside[0], inside[-1]) if inside else None


def featurize(batch: dict, indices: list[int], tokenizer, task_cfg, training: bool) -> dict:
    """Windows of a batch of questions (a `datasets.map(batched=True)` function)."""
    questions = tokenizer(batch["question"], add_special_tokens=False)["input_ids"]
    contexts = tokenizer(batch["context"], add_special_tokens=False, return_offsets_mapping=True)
    names = ["input_ids", "token_type_ids", "attention_mask"]
    names += (
        ["start_positions", "end_positions"]
        if training
        else ["example_index", "context_offset", "token_offsets"]
    )
    out: dict[str, list] = {name: [] for name in names}
    for row, index in enumerate(indices):
        question = questions[row][: task_cfg.max_query_length]
        context_ids, offsets = contexts["input_ids"][row], contexts["offset_mapping"][row]
        head = [tokenizer.cls_token_id, *question, tokenizer.sep_token_id]
        budget = task_cfg.seq_len - len(head) - 1
        if budget < 1:
            raise SparseBertError(
                f"task.seq_len={task_cfg.seq_len} leaves no room for the context after question "
                f"{batch['id'][row]!r} ({len(question)} tokens kept); raise task.seq_len or lower "
                f"task.max_query_length={task_cfg.max_query_length}."
            )
        answer = None
        if training and batch["answer_texts"][row]:
            start_char = batch["answer_starts"][row][0]
            answer = token_span(
                offsets, start_char, start_char + len(batch["answer_texts"][row][0])
            )
        for start, size in window_starts(len(context_ids), budget, task_cfg.doc_stride):
            out["input_ids"].append(
                [*head, *context_ids[start : start + size], tokenizer.sep_token_id]
            )
            out["token_type_ids"].append([0] * len(head) + [1] * (size + 1))
            out["attention_mask"].append([1] * (len(head) + size + 1))
            if training:
                inside = answer is not None and start <= answer[0] and answer[1] < start + size
                shift = len(head) - start
                out["start_positions"].append(answer[0] + shift if inside else 0)
                out["end_positions"].append(answer[1] + shift if inside else 0)
            else:
                out["example_index"].append(index)
                out["context_offset"].append(len(head))
                out["token_offsets"].append([list(o) for o in offsets[start : start + size]])
    return out


def read_squad_json(path: Path) -> dict[str, list]:
    """The questions of a file in the official SQuAD layout, as EXAMPLE_COLUMNS columns (an
    unanswerable v2.0 question has no answers)."""
    try:
        articles = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
        columns: dict[str, list] = {name: [] for name in EXAMPLE_COLUMNS}
        for article in articles:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = [] if qa.get("is_impossible", False) else qa["answers"]
                    columns["id"].append(str(qa["id"]))
                    columns["title"].append(article.get("title", ""))
                    columns["context"].append(paragraph["context"])
                    columns["question"].append(qa["question"])
                    columns["answer_texts"].append([a["text"] for a in answers])
                    columns["answer_starts"].append([int(a["answer_start"]) for a in answers])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SparseBertError(
            f"cannot read {path} as a SQuAD file ({type(error).__name__}: {error}); it must be "
            'the official JSON layout: {"data": [{"title", "paragraphs": [{"context", "qas": '
            '[{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}.'
        ) from None
    return columns


def local_files(task_cfg, train: bool = True) -> dict[str, Path]:
    """split -> file of task.data_dir (official names) or task.data_files; {} when neither.
    Without `train` (evaluate) the train file is neither needed nor read."""
    if task_cfg.data_dir:
        official = OFFICIAL_FILES[bool(task_cfg.version_2_with_negative)]
        files = {split: Path(task_cfg.data_dir) / name for split, name in official.items()}
    else:
        files = {split: Path(path) for split, path in task_cfg.data_files.items()}
    read = set(files) - (set() if train else {"train"})  # evaluate reads dev alone
    if files and read != set(splits_read(train)):
        raise SparseBertError(
            f"task.data_files={dict(task_cfg.data_files)} must name exactly a train and a dev file "
            "in the official SQuAD JSON layout, e.g. task.data_files={train: train-v1.1.json, "
            "dev: dev-v1.1.json}."
        )
    files = {split: path for split, path in files.items() if split in read}
    for split, path in files.items():
        if not path.is_file():
            raise SparseBertError(
                f"the {split} file {path} of task={task_cfg.name} does not exist; put the official "
                f"files ({', '.join(OFFICIAL_FILES[bool(task_cfg.version_2_with_negative)].values())}) "
                "in task.data_dir, or name them with task.data_files={train: ..., dev: ...}."
            )
    return files


def squad_examples(task_cfg, cache_dir: Path, train: bool = True) -> dict:
    """split (train, dev; dev alone without `train`) -> datasets.Dataset of questions with
    EXAMPLE_COLUMNS."""
    import datasets

    files = local_files(task_cfg, train)
    if files:
        splits = {
            split: datasets.Dataset.from_dict(read_squad_json(p)) for split, p in files.items()
        }
        return _answerable(splits, task_cfg, files)
    if not task_cfg.hub_path:
        raise SparseBertError(
            f"task={task_cfg.name} has no data source: set task.data_dir=<folder with the official "
            "JSON files>, task.data_files={train: ..., dev: ...} or task.hub_path."
        )
    official = ", ".join(OFFICIAL_FILES[bool(task_cfg.version_2_with_negative)].values())
    loaded = load_hub_dataset(
        task_cfg.hub_path,
        task_cfg.hub_config,
        cache_dir,
        f"Offline, use a local copy: task.data_dir=<folder with {official}>.",
    )
    require_splits(
        loaded,
        task_cfg.hub_path,
        splits_read(train),
        f"Use the official files: task.data_dir=<folder with {official}>.",
    )

    def flatten(batch):
        return {
            "answer_texts": [a["text"] for a in batch["answers"]],
            "answer_starts": [a["answer_start"] for a in batch["answers"]],
        }

    splits = {
        hub_split_name(name): split.map(flatten, batched=True, remove_columns=["answers"])
        for name, split in loaded.items()
        if hub_split_name(name) in splits_read(train)
    }
    return _answerable(splits, task_cfg, {name: task_cfg.hub_path for name in splits})


def _answerable(splits: dict, task_cfg, sources: dict) -> dict:
    """`splits`, refused under SQuAD v1.1 when a question has no answer: v2.0 data (v1.1 scores
    such a question as never matched, so its metrics would be quietly low)."""
    if task_cfg.version_2_with_negative:
        return splits
    for name, split in splits.items():
        unanswerable = sum(not texts for texts in split["answer_texts"])
        if unanswerable:
            raise SparseBertError(
                f"the {name} split of task={task_cfg.name} ({sources[name]}) has {unanswerable} of "
                f"{len(split)} questions without an answer, as SQuAD v2.0 data has; v1.1 would "
                "score them as never matched. Use task=squad_v2 for v2.0 data, or the v1.1 files."
            )
    return splits


def load_squad(task_cfg, tokenizer, cache_dir: Path, train: bool = True) -> SquadData:
    """Questions and windowed features of SQuAD (v2.0 with task.version_2_with_negative);
    `train`: featurize the train split too (evaluate does not)."""
    import datasets

    examples = squad_examples(task_cfg, cache_dir, train)
    splits = datasets.DatasetDict(
        {
            name: split.map(
                featurize,
                batched=True,
                fn_kwargs={
                    "tokenizer": tokenizer,
                    "task_cfg": task_cfg,
                    "training": name == "train",
                },
                with_indices=True,
                remove_columns=split.column_names,
            )
            for name, split in examples.items()
        }
    )
    return SquadData(
        name=task_cfg.name,
        examples=examples,
        splits=splits,
        pad_token_id=tokenizer.pad_token_id,
        seq_len=task_cfg.seq_len,
        n_best=task_cfg.n_best,
        max_answer_length=task_cfg.max_answer_length,
        version_2_with_negative=task_cfg.version_2_with_negative,
        null_score_threshold=task_cfg.null_score_threshold,
    )
