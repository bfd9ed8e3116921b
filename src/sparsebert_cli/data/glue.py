"""The original GLUE download layout (`<glue_dir>/<TASK>/*.tsv`) and its quirks.

The files are tab-separated but not CSV-quoted: quote characters are literal text and fields never
contain tabs, so a line is split on tabs and nothing else. CoLA's train/dev files have no header
(source, label, original label, sentence) while its test file has one (index, sentence). MNLI has
matched and mismatched dev and test files. STS-B's labels are floats from 0 to 5. The real QQP and
MNLI downloads contain a few malformed lines: lines with the wrong number of fields (or a label
outside the task's label set) are skipped and counted.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from sparsebert_cli.data.local_files import read_utf8
from sparsebert_cli.errors import SparseBertError

log = logging.getLogger(__name__)

STANDARD_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


@dataclass(frozen=True)
class GlueLayout:
    folder: str  # the task's folder in the GLUE download
    text_columns: tuple[str, ...]  # header names of the one or two text fields
    label_column: str  # header name of the label in train/dev files
    submissions: dict[str, str]  # test split -> file name the GLUE server expects
    files: dict[str, str] = field(default_factory=lambda: dict(STANDARD_FILES))
    index_column: str = "index"  # test files: the example index the server expects back
    headerless_columns: tuple[str, ...] = ()  # train/dev files without a header (CoLA)


GLUE_TASKS = {
    "cola": GlueLayout(
        "CoLA",
        ("sentence",),
        "label",
        {"test": "CoLA.tsv"},
        headerless_columns=("source", "label", "original_label", "sentence"),
    ),
    "sst2": GlueLayout("SST-2", ("sentence",), "label", {"test": "SST-2.tsv"}),
    "mrpc": GlueLayout("MRPC", ("#1 String", "#2 String"), "Quality", {"test": "MRPC.tsv"}),
    "qqp": GlueLayout(
        "QQP", ("question1", "question2"), "is_duplicate", {"test": "QQP.tsv"}, index_column="id"
    ),
    "stsb": GlueLayout("STS-B", ("sentence1", "sentence2"), "score", {"test": "STS-B.tsv"}),
    "mnli": GlueLayout(
        "MNLI",
        ("sentence1", "sentence2"),
        "gold_label",
        {"test": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
        files={
            "train": "train.tsv",
            "dev": "dev_matched.tsv",
            "dev_mismatched": "dev_mismatched.tsv",
            "test": "test_matched.tsv",
            "test_mismatched": "test_mismatched.tsv",
        },
    ),
    "qnli": GlueLayout("QNLI", ("question", "sentence"), "label", {"test": "QNLI.tsv"}),
    "rte": GlueLayout("RTE", ("sentence1", "sentence2"), "label", {"test": "RTE.tsv"}),
    "wnli": GlueLayout("WNLI", ("sentence1", "sentence2"), "label", {"test": "WNLI.tsv"}),
}


UNLABELLED = -1  # the label of a row without one (a test split); -1.0 for regression


def unlabelled(label_names: list[str]) -> int | float:
    """The label of a row without one: UNLABELLED, a float for regression (no label names)."""
    return UNLABELLED if label_names else float(UNLABELLED)


def labelled(split_name: str) -> bool:
    """Whether a split's rows must carry labels: all but the test splits."""
    return not split_name.startswith("test")


def missing_glue_file(task_name: str, glue_dir: Path, train: bool = True) -> str | None:
    """Why `<glue_dir>/<TASK>/` lacks a split a stage reads (train unless not `train`, and dev;
    test files are optional), or None: checked before a run (validation) and when it reads."""
    layout = GLUE_TASKS[task_name]
    for split, file_name in layout.files.items():
        path = Path(glue_dir) / layout.folder / file_name
        if split.startswith("test") or (split == "train" and not train) or path.is_file():
            continue
        expected = ", ".join(layout.files.values())
        return (
            f"task.glue_dir={glue_dir} has no {path}. The GLUE layout is "
            f"<glue_dir>/{layout.folder}/{{{expected}}} (test files optional); point "
            "task.glue_dir at the folder that holds the task folders."
        )
    return None


def read_glue_folder(
    task_name: str, glue_dir: Path, label_names: list[str], train: bool = True
) -> dict[str, dict]:
    """Columns (text_a, text_b, label, idx) of every split present in `<glue_dir>/<TASK>/`.

    train (unless `train` is False: it is then not read) and dev must exist; test files are
    optional. Test labels are -1 (unknown). `label_names` empty means regression (float labels).
    """
    problem = missing_glue_file(task_name, glue_dir, train)
    if problem is not None:
        raise SparseBertError(problem)
    layout = GLUE_TASKS[task_name]
    folder = Path(glue_dir) / layout.folder
    splits = {}
    for split, file_name in layout.files.items():
        path = folder / file_name
        if (split == "train" and not train) or not path.is_file():  # test files are optional
            continue
        columns, skipped, unknown = read_glue_file(
            path, layout, label_names, labelled=labelled(split)
        )
        if skipped:
            labels = f" (labels not in the task's set: {sorted(unknown)[:10]})" if unknown else ""
            log.warning("skipped %d malformed line(s) of %s%s", skipped, path, labels)
        if not columns["idx"]:  # a test file with its header only: no predictions to write
            log.warning("%s has no usable rows: no %s predictions are written", path, split)
            continue
        splits[split] = columns
    return splits


def read_glue_file(
    path: Path, layout: GlueLayout, label_names: list[str], labelled: bool
) -> tuple[dict, int, set[str]]:
    """One TSV file as columns (text_a, [text_b,] label, idx), how many lines were skipped and
    the labels outside the task's set among them."""
    text = read_utf8(
        path, "GLUE files are UTF-8: re-download the file, or convert it (e.g. iconv -t UTF-8)."
    )
    lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise SparseBertError(
            f"{path} is empty. Re-download the task's GLUE files, or point task.glue_dir at the "
            "folder that holds the complete task folders."
        )
    if labelled and layout.headerless_columns:
        header = list(layout.headerless_columns)
    else:
        header, lines = lines[0].split("\t"), lines[1:]
    needed = [*layout.text_columns, layout.label_column if labelled else layout.index_column]
    missing = [name for name in needed if name not in header]
    if missing:
        raise SparseBertError(
            f"{path} lacks the column(s) {missing} (its header is {header}). Use the files of the "
            "original GLUE download, or load this data with task.data_files and task.text_fields."
        )
    positions = [header.index(name) for name in needed]
    pair = len(layout.text_columns) == 2
    columns = {"text_a": [], **({"text_b": []} if pair else {}), "label": [], "idx": []}
    skipped, unknown = 0, set()
    for row, line in enumerate(lines):  # idx: the row of the file, kept when a row is skipped
        fields = line.split("\t")
        if len(fields) != len(header) and not labelled:
            raise SparseBertError(
                f"{path}: a row has {len(fields)} tab-separated fields, its header {len(header)} "
                f"({line[:60]!r}…); a test file's rows all need a prediction in the submission "
                "(the GLUE server refuses a file with rows missing), so none is skipped. "
                "Re-download the file, or mend that row."
            )
        if len(fields) != len(header):
            skipped += 1
            continue
        values = [fields[p] for p in positions]
        if labelled:
            label = parse_label(values[-1], label_names)
            if label is None:
                skipped += 1
                unknown.add(values[-1])
                continue
            columns["label"].append(label)
            columns["idx"].append(row)
        else:
            columns["label"].append(unlabelled(label_names))
            columns["idx"].append(_index(values[-1], path, row, layout.index_column))
        columns["text_a"].append(values[0])
        if pair:
            columns["text_b"].append(values[1])
    if labelled and not columns["idx"]:
        raise SparseBertError(no_examples_message(path, layout, len(lines), unknown, label_names))
    return columns, skipped, unknown


def _index(value: str, path: Path, row: int, column: str) -> int:
    """A test row's index (row: its 0-based place among the data rows), the number its submission
    line carries."""
    try:
        return int(value)
    except ValueError:
        raise SparseBertError(
            f"{path}: data row {row + 1} has the {column} {value!r}, not a whole number (a test "
            f"file's {column} column numbers its rows for the submission); re-download the file, "
            "or mend that row."
        ) from None


def no_examples_message(
    path: Path, layout: GlueLayout, rows: int, unknown: set[str], label_names: list[str]
) -> str:
    """Why a labelled file gave no example: no rows, unknown labels only, or malformed lines."""
    if unknown:
        seen = sorted(unknown)[:10]
        expected = (
            f"task.label_names={label_names}" if label_names else "numbers (task.kind=regression)"
        )
        return (
            f"{path} has no usable example: no line has a known {layout.label_column} label "
            f"(unknown labels seen: {seen}; expected {expected}). Use the task's original GLUE files, or set "
            "task.label_names (and task.num_labels) to the labels this data uses."
        )
    problem = "its lines have the wrong number of tab-separated fields" if rows else "no rows"
    return (
        f"{path} has no usable example ({problem}). Use the task's original GLUE files, or point "
        "task.glue_dir at a complete copy."
    )


def parse_label(text: str, label_names: list[str]) -> float | int | None:
    """A label as its class id (or float for regression); None when it is not a valid label
    (also a score of nan or inf: it made the loss and both correlations nan)."""
    if not label_names:
        try:
            score = float(text)
        except ValueError:
            return None
        return score if math.isfinite(score) else None
    return label_names.index(text) if text in label_names else None
