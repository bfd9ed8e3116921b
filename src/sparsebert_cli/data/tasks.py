"""Fine-tuning tasks: GLUE (hub, GLUE download folder, or csv/json/parquet files) and the embedded
polarity and lee_sts tasks, tokenized into a `datasets.DatasetDict`.

Sources, first match wins: `task.glue_dir` or `task.data_files` (validate refuses both at once),
the embedded data (polarity, lee_sts), `task.hub_path`. Split names: `train`, `dev`, `test` (MNLI adds `dev_mismatched` and
`test_mismatched`; `dev`/`test` are the matched sets). Unknown test labels are -1.

Embedded splits are k-fold cross-validation (`task.fold` of `task.num_folds`), seeded by the run's
seed: polarity is stratified by label; lee_sts is split by documents, so no document appears in
both train and dev: dev holds the pairs of two fold documents, train the pairs of two other
documents, and the pairs that cross the two are left out (with 5 folds: 780 train, 45 dev pairs).
"""

import math
import random
from dataclasses import dataclass
from pathlib import Path

from sparsebert_cli.data import embedded
from sparsebert_cli.data.config import no_source_problem, splits_read, task_source
from sparsebert_cli.data.glue import GLUE_TASKS, labelled, read_glue_folder, unlabelled
from sparsebert_cli.data.hub import hub_split_name, load_hub_dataset, require_splits
from sparsebert_cli.data.local_files import load_local_files
from sparsebert_cli.data.metrics import FIXED_OUTPUTS, TASK_METRICS
from sparsebert_cli.data.padding import longest_input, padded_inputs
from sparsebert_cli.errors import SparseBertError

FILE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
}


@dataclass
class TaskData:
    name: str
    splits: object  # datasets.DatasetDict: input_ids, token_type_ids, attention_mask, labels, idx
    num_labels: int  # 1 for regression
    kind: str  # classification | regression
    label_names: list[str]  # empty for regression
    pad_token_id: int

    def longest_batch(self) -> int:
        """The most tokens a batch can have: the longest example (collate pads to it)."""
        return longest_input(self.splits)

    def collate(self, batch: list[dict]) -> dict:
        """Tensors for a batch, sequences padded to the longest one in it."""
        import torch

        longest = max(len(example["input_ids"]) for example in batch)
        tensors = padded_inputs(batch, longest, self.pad_token_id)
        label_type = torch.float if self.kind == "regression" else torch.long
        tensors["labels"] = torch.tensor([e["labels"] for e in batch], dtype=label_type)
        tensors["idx"] = torch.tensor([e["idx"] for e in batch], dtype=torch.long)
        return tensors


def load_task(task_cfg, tokenizer, cache_dir: Path, seed: int, train: bool = True) -> TaskData:
    """The task's splits, tokenized to `task.seq_len` tokens (pairs trimmed longest-first);
    `train`: the train split too (evaluate neither needs nor tokenizes it: 393k MNLI pairs)."""
    import datasets

    check_task(task_cfg)
    regression = task_cfg.kind == "regression"
    label_names = [] if regression else list(task_cfg.label_names)
    raw = raw_splits(task_cfg, label_names, cache_dir, seed, train)
    label_type = datasets.Value("float32" if regression else "int64")

    def tokenize(batch):
        pair = (batch["text_b"],) if "text_b" in batch else ()
        encoded = tokenizer(batch["text_a"], *pair, truncation=True, max_length=task_cfg.seq_len)
        return {
            "input_ids": encoded["input_ids"],
            "token_type_ids": encoded["token_type_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": batch["label"],
        }

    splits = datasets.DatasetDict(
        {
            name: split.map(
                tokenize, batched=True, remove_columns=[c for c in split.column_names if c != "idx"]
            ).cast_column("labels", label_type)
            for name, split in raw.items()
        }
    )
    return TaskData(
        name=task_cfg.name,
        splits=splits,
        num_labels=FIXED_OUTPUTS["regression"] if regression else len(label_names),
        kind=task_cfg.kind,
        label_names=label_names,
        pad_token_id=tokenizer.pad_token_id,
    )


def check_task(task_cfg) -> None:
    if task_cfg.kind not in ("classification", "regression"):
        raise SparseBertError(
            f"task.kind={task_cfg.kind} is not a kind the sentence(-pair) task loader reads: "
            "use classification or regression."
        )


def raw_splits(
    task_cfg, label_names: list[str], cache_dir: Path, seed: int, train: bool = True
) -> dict:
    """Untokenized splits with columns text_a, [text_b,] label, idx (without train unless
    `train`: a GLUE folder's train.tsv is then neither needed nor read)."""
    import datasets

    source = task_source(task_cfg)  # a GLUE folder counts for its own task only (a sweep's)
    if source == "glue_dir":
        columns = read_glue_folder(task_cfg.name, Path(task_cfg.glue_dir), label_names, train)
        return {name: datasets.Dataset.from_dict(c) for name, c in columns.items()}
    if source == "data_files":
        splits = file_splits(task_cfg, label_names, cache_dir, train)
    elif source == "embedded":
        splits = EMBEDDED_SPLITS[task_cfg.name](task_cfg, seed)
    elif source == "hub":
        splits = hub_splits(task_cfg, label_names, cache_dir)
    else:
        raise SparseBertError(str(no_source_problem(task_cfg)))
    return {name: split for name, split in splits.items() if train or name != "train"}


def local_alternatives(task_cfg) -> str:
    layout = GLUE_TASKS.get(task_cfg.name)
    glue = (
        f"task.glue_dir=<folder with {layout.folder}/train.tsv, dev.tsv, test.tsv>, "
        if layout
        else ""
    )
    return (
        f"Offline, use a local copy: {glue}or task.data_files={{train: <file>, dev: <file>}} "
        "(csv/json/parquet); or an embedded task: task=polarity or task=lee_sts."
    )


def hub_splits(task_cfg, label_names: list[str], cache_dir: Path) -> dict:
    loaded = load_hub_dataset(
        task_cfg.hub_path, task_cfg.hub_config, cache_dir, local_alternatives(task_cfg)
    )
    require_splits(
        loaded, task_cfg.hub_path, splits_read(train=True),
        "Split a dev set off its train split and pass both as files: "
        "task.data_files={train: <file>, dev: <file>} (csv/json/parquet).",
    )  # fmt: skip
    return {
        hub_split_name(name): standard_columns(
            split, task_cfg, label_names, f"{task_cfg.hub_path}:{name}", labelled(name)
        )
        for name, split in loaded.items()
    }


def file_splits(task_cfg, label_names: list[str], cache_dir: Path, train: bool = True) -> dict:
    """The splits of `task.data_files`; without `train` (evaluate) the train file is neither
    needed nor read."""
    files = data_file_paths(task_cfg, train)
    suffix = Path(next(iter(files.values()))).suffix.lower()
    options = {"delimiter": "\t", "quoting": 3} if suffix == ".tsv" else {}  # 3: csv.QUOTE_NONE
    if FILE_BUILDERS[suffix] == "csv":  # a text cell as written: "1" or "2.50" is a sentence
        options["converters"] = {field: str for field in task_cfg.text_fields}
    loaded = load_local_files(FILE_BUILDERS[suffix], files, cache_dir, **options)
    return {
        name: standard_columns(
            split, task_cfg, label_names, files[name], labelled(name), settable=train
        )
        for name, split in loaded.items()
    }


def data_file_paths(task_cfg, train: bool = True) -> dict[str, str]:
    """split -> file of `task.data_files` that a stage reads (train only with `train`), refused
    unless the splits it needs are there, in one format, as existing files (validate checks
    them so too)."""
    files = {
        split: path for split, path in task_cfg.data_files.items() if train or split != "train"
    }
    missing = [name for name in splits_read(train) if name not in files]
    suffixes = {Path(path).suffix.lower() for path in files.values()}
    if missing or len(suffixes) != 1 or next(iter(suffixes)) not in FILE_BUILDERS:
        needed = " and ".join(f"a {name}" for name in splits_read(train))
        example = ", ".join(f"{name}: {name}.csv" for name in splits_read(train))
        raise SparseBertError(
            f"task.data_files={dict(task_cfg.data_files)} needs {needed} file (test optional) "
            f"of one format among {sorted(FILE_BUILDERS)}, e.g. task.data_files={{{example}}}."
        )
    for path in files.values():
        if not Path(path).is_file():
            raise SparseBertError(
                f"task.data_files names '{path}', which does not exist. Fix the path."
            )
    return files


def _fixed_columns(task_cfg) -> str:
    """The fix for data that does not fit a fine-tuned model's task (evaluate, which takes the
    task's columns and labels from the fine-tuning and does not let them be set)."""
    labels = f", labels among {list(task_cfg.label_names)}" if task_cfg.label_names else ""
    return (
        f"evaluate reads the fine-tuning's columns (text {list(task_cfg.text_fields)}, label "
        f"'{task_cfg.label_field}'{labels}): give the file those."
    )


def standard_columns(
    split, task_cfg, label_names: list[str], source: str, has_labels: bool, settable: bool = True
):
    """Rename `task.text_fields` / `task.label_field` to text_a, text_b, label; add idx if absent.

    String labels are mapped to class ids through `task.label_names`. A test split's labels are
    `unlabelled` (also when the file has some: they are never scored); the other splits must
    carry a valid label in every row. settable: whether the task's columns and labels may be set
    (not under evaluate: its errors say what the data must hold instead).
    """
    import datasets

    fixed = None if settable else _fixed_columns(task_cfg)
    fields = list(task_cfg.text_fields)
    missing = [name for name in fields if name not in split.column_names]
    if missing or not 1 <= len(fields) <= 2:
        fix = fixed or "Set task.text_fields (and task.label_field) to this data's columns."
        raise SparseBertError(
            f"{source} has columns {split.column_names}; task.text_fields={fields} must name one "
            f"or two of them. {fix}"
        )
    regression, label_field = not label_names, task_cfg.label_field
    if has_labels and label_field not in split.column_names:
        fix = fixed or "set task.label_field to the column that holds the labels."
        raise SparseBertError(
            f"{source} has no label column '{label_field}' (its columns: {split.column_names}); "
            f"{fix}"
        )

    label_fix = fixed
    if fixed is None and "f1" in TASK_METRICS.get(task_cfg.name, ("", ()))[1]:
        label_fix = (
            f"Fix that row of the data; task={task_cfg.name} computes binary F1, so it takes two "
            "classes only (data with more go under a task scored by accuracy, e.g. task=mnli or "
            "task=sst2, with task.num_labels and task.label_names set)."
        )

    def convert(batch, indices):
        columns = {"text_a": _texts(batch, fields[0], indices, source)}
        if len(fields) == 2:
            columns["text_b"] = _texts(batch, fields[1], indices, source)
        if has_labels:
            columns["label"] = [
                to_label(value, label_names, source, label_fix) for value in batch[label_field]
            ]
        else:
            columns["label"] = [unlabelled(label_names)] * len(indices)
        columns["idx"] = _row_ids(batch["idx"], indices, source) if "idx" in batch else indices
        return columns

    features = datasets.Features(
        {
            **{column: datasets.Value("string") for column in ("text_a", "text_b")[: len(fields)]},
            "label": datasets.Value("float32" if regression else "int64"),
            "idx": datasets.Value("int64"),
        }
    )
    return split.map(
        convert,
        batched=True,
        with_indices=True,
        remove_columns=split.column_names,
        features=features,
    )


def _texts(batch: dict, field: str, indices: list[int], source: str) -> list[str]:
    """A text column of a batch; a row without the text (an empty csv cell, a JSON or parquet
    null) is refused: the tokenizer failed on it with a traceback."""
    values = batch[field]
    for value, row in zip(values, indices, strict=True):
        if not isinstance(value, str):
            found = "an empty cell or null" if value is None else f"{value!r}, not a string"
            raise SparseBertError(
                f"{source} has no text in '{field}' in data row {row + 1} ({found}); every row "
                "needs its text fields as strings. Fill, quote or drop that row of the data."
            )
    return values


def _row_ids(values: list, indices: list[int], source: str) -> list[int]:
    """A data file's own idx column as whole numbers (predictions and submissions carry them)."""
    ids = []
    for value, row in zip(values, indices, strict=True):
        try:  # a JSON 3.0 is 3, a string the digits of a whole number (int() of 3.5 cuts it)
            if not float(value).is_integer():
                raise ValueError
            ids.append(int(value))
        except (ValueError, TypeError):
            raise SparseBertError(
                f"{source} has the idx {value!r} in data row {row + 1}, not a whole number: an "
                "idx column numbers the rows for the predictions and the submission. Fix it, or "
                "drop the column (the rows are then numbered in order)."
            ) from None
    return ids


def to_label(value, label_names: list[str], source: str, fixed: str | None = None):
    """A labelled row's label: a float for regression, else a class id. fixed: the fix when the
    task's labels cannot be set (evaluate), instead of setting them."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise SparseBertError(
            f"{source} has a row without a label ({value!r}); every train and dev row needs "
            "one. Fix that row of the data."
        )
    if not label_names:
        try:
            number = float(value)
        except ValueError:
            fix = fixed or (
                "set task.label_field to the column with the scores, or put the data under a "
                "classification task with task.label_names."
            )
            raise SparseBertError(
                f"{source} has the label {value!r}, but the task is a regression (number "
                f"labels); {fix}"
            ) from None
        if not math.isfinite(number):
            raise SparseBertError(
                f"{source} has the score {value!r}; a regression's labels must be finite "
                "numbers. Fix that row of the data."
            )
        return number
    if isinstance(value, str):
        if value not in label_names:
            fix = fixed or "Fix the data or set task.label_names to the labels it uses."
            raise SparseBertError(
                f"{source} has the label '{value}', not among task.label_names={label_names}. {fix}"
            )
        return label_names.index(value)
    more = len(label_names) + 1
    fix = fixed or (
        "Fix that row of the data, or, if the data have more classes, set task.num_labels and "
        f"task.label_names (e.g. task.num_labels={more} task.label_names="
        f"[{','.join(map(str, range(more)))}])."
    )
    return class_id(value, len(label_names), source, fix)


def class_id(value: float, count: int, source: str, fix: str = "Fix that row of the data.") -> int:
    """A numeric class label of a labelled row, 0..count − 1; another value is refused (it was
    scored as a wrong prediction, or failed inside the loss)."""
    if not math.isfinite(value) or value != int(value) or not 0 <= int(value) < count:
        raise SparseBertError(
            f"{source} has the label {value}, but the task's classes are 0..{count - 1}. {fix}"
        )
    return int(value)


def fold_of(position: int, num_folds: int) -> int:
    return position % num_folds


def _fold_rows(task_cfg, split: str, chosen: list[int], unit: str) -> list[int]:
    """The rows of one split of an embedded task's folds, refused when there are none."""
    if not chosen:
        raise SparseBertError(
            f"task.num_folds={task_cfg.num_folds} task.fold={task_cfg.fold} leaves task="
            f"{task_cfg.name} no {split} examples (each fold needs {unit}); use fewer folds."
        )
    return chosen


def polarity_splits(task_cfg, seed: int) -> dict:
    """Stratified folds: each label's sentences are shuffled (seeded) and dealt round-robin."""
    import datasets

    sentences, labels = embedded.polarity_sentences()
    rng = random.Random(seed)
    folds = [0] * len(sentences)
    for label in sorted(set(labels)):
        members = [i for i, value in enumerate(labels) if value == label]
        rng.shuffle(members)
        for position, i in enumerate(members):
            folds[i] = fold_of(position, task_cfg.num_folds)
    splits = {}
    for name, in_dev in (("train", False), ("dev", True)):
        chosen = [i for i in range(len(sentences)) if (folds[i] == task_cfg.fold) == in_dev]
        chosen = _fold_rows(task_cfg, name, chosen, "a sentence")
        splits[name] = datasets.Dataset.from_dict(
            {
                "text_a": [sentences[i] for i in chosen],
                "label": [labels[i] for i in chosen],
                "idx": chosen,
            }
        )
    return splits


def lee_sts_splits(task_cfg, seed: int) -> dict:
    """Folds of documents (seeded); pairs indexed in upper-triangle order (0..1224)."""
    import datasets

    documents, similarities = embedded.lee_documents(), embedded.lee_similarities()
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    in_fold = {
        doc: fold_of(position, task_cfg.num_folds) == task_cfg.fold
        for position, doc in enumerate(order)
    }
    pairs = [(i, j) for i in range(len(documents)) for j in range(i + 1, len(documents))]
    splits = {}
    for name, in_dev in (("train", False), ("dev", True)):
        chosen = [n for n, (i, j) in enumerate(pairs) if in_fold[i] == in_fold[j] == in_dev]
        chosen = _fold_rows(task_cfg, name, chosen, "two documents, to pair")
        splits[name] = datasets.Dataset.from_dict(
            {
                "text_a": [documents[pairs[n][0]] for n in chosen],
                "text_b": [documents[pairs[n][1]] for n in chosen],
                "label": [similarities[pairs[n][0]][pairs[n][1]] for n in chosen],
                "idx": chosen,
            }
        )
    return splits


# The embedded tasks' splits: folds of the data (data/config.py: EMBEDDED_TASKS).
EMBEDDED_SPLITS = {"polarity": polarity_splits, "lee_sts": lee_sts_splits}
