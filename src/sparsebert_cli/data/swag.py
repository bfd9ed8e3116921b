"""SWAG: pick the right one of four endings (multiple choice), from the hub or the original CSVs.

Each question becomes four sequences `[CLS] sent1 [SEP] sent2 ending_k [SEP]` (k = 0..3,
trimmed longest-first to `task.seq_len`), stored as one row with [4, len] columns; `collate`
pads them to the longest sequence of the batch and returns input_ids, token_type_ids and
attention_mask of shape [B, 4, L] with labels [B] (the right ending; -1 when unknown, as in the
test split). The multiple-choice head scores each sequence and takes a softmax over the four.
"""

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from sparsebert_cli.data.config import splits_read
from sparsebert_cli.data.glue import UNLABELLED, labelled
from sparsebert_cli.data.hub import hub_split_name, load_hub_dataset, require_splits
from sparsebert_cli.data.local_files import read_utf8
from sparsebert_cli.data.metrics import FIXED_OUTPUTS
from sparsebert_cli.data.padding import longest_input, padded_inputs
from sparsebert_cli.data.tasks import class_id
from sparsebert_cli.errors import SparseBertError

ENDINGS = tuple(f"ending{k}" for k in range(FIXED_OUTPUTS["multiple_choice"]))
TEXT_COLUMNS = ("sent1", "sent2", *ENDINGS)
OFFICIAL_FILES = {"train": "train.csv", "dev": "val.csv", "test": "test.csv"}  # test optional


@dataclass
class SwagData:
    name: str
    splits: object  # datasets.DatasetDict: input_ids, token_type_ids, attention_mask [4, len], labels, idx
    pad_token_id: int
    num_labels: int = len(ENDINGS)
    kind: str = "multiple_choice"
    label_names: list[str] = field(default_factory=lambda: [str(k) for k in range(len(ENDINGS))])

    def longest_batch(self) -> int:
        """The most tokens a batch can have: the longest choice (collate pads to it)."""
        return longest_input(self.splits)

    def collate(self, batch: list[dict]) -> dict:
        """Tensors [B, 4, L] (L: the longest sequence in the batch), labels [B] and idx [B]."""
        import torch

        longest = max(len(choice) for e in batch for choice in e["input_ids"])
        tensors = padded_inputs(batch, longest, self.pad_token_id)
        tensors["labels"] = torch.tensor([e["labels"] for e in batch], dtype=torch.long)
        tensors["idx"] = torch.tensor([e["idx"] for e in batch], dtype=torch.long)
        return tensors


def _number(text: str, path: Path) -> float:
    """A label cell as a number (an int when whole, for the messages)."""
    try:
        value = float(text)
    except ValueError:
        raise SparseBertError(
            f"{path} has the label '{text}', not the number of the right ending "
            f"(0–{len(ENDINGS) - 1}); fix that row."
        ) from None
    return int(value) if value.is_integer() else value


def read_swag_csv(path: Path, labelled: bool = True) -> dict[str, list]:
    """sent1, sent2, ending0..3, label and idx of an original CSV; the label is -1 when not
    `labelled` (a test file: its labels, -1 or empty in the originals, are never scored)."""
    text = read_utf8(
        path, "SWAG's CSVs are UTF-8: re-download the file, or convert it (e.g. iconv -t UTF-8)."
    )
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    needed = [*TEXT_COLUMNS, *(["label"] if labelled else [])]
    missing = [name for name in needed if name not in header]
    if missing:
        raise SparseBertError(
            f"{path} lacks the SWAG column(s) {missing}"
            f"{' (a train or dev CSV needs the label: the right ending)' if 'label' in missing else ''}"
            "; it must be the original CSV layout (video-id, fold-ind, startphrase, sent1, sent2, "
            "gold-source, ending0..ending3, label)."
        )
    rows = list(reader)
    if not rows:
        raise SparseBertError(
            f"{path} has a header but no rows; re-download the file, or point task.data_dir at "
            "the folder of the complete CSVs."
        )
    for number, row in enumerate(rows, start=1):
        if any(row[name] is None for name in needed):  # csv fills a short row's cells with None
            raise SparseBertError(
                f"{path}: row {number} has fewer fields than its header ({len(header)}); mend "
                "that row, or re-download the file."
            )
    columns = {name: [row[name] for row in rows] for name in TEXT_COLUMNS}
    columns["label"] = [
        class_id(_number(row["label"], path), len(ENDINGS), str(path)) if labelled else UNLABELLED
        for row in rows
    ]
    columns["idx"] = list(range(len(rows)))
    return columns


def swag_files(task_cfg, train: bool = True) -> dict[str, Path]:
    """split -> original CSV of task.data_dir or task.data_files that a stage reads ({} when
    neither is set), refused unless the splits it needs are there (validate checks them so too);
    without `train` (evaluate) the train file is neither needed nor read."""
    if task_cfg.data_dir:
        files = {
            split: Path(task_cfg.data_dir) / name
            for split, name in OFFICIAL_FILES.items()
            if split != "test" or (Path(task_cfg.data_dir) / name).is_file()
        }
    else:
        files = {split: Path(path) for split, path in task_cfg.data_files.items()}
    if files:
        if not train:
            files.pop("train", None)
        needed = set(splits_read(train))
        absent = [str(p) for p in files.values() if not p.is_file()]
        if absent or not needed <= set(files) or not set(files) <= set(OFFICIAL_FILES):
            what, put, given = (
                ("a train and a dev CSV", "train.csv and val.csv", "{train: ..., dev: ...}")
                if train
                else ("a dev CSV", "val.csv", "{dev: ...}")
            )
            raise SparseBertError(
                f"task={task_cfg.name} needs {what} (test optional) in the original SWAG layout; "
                f"missing or unknown: {absent or sorted(files)}. Put {put} in task.data_dir, or "
                f"set task.data_files={given}."
            )
    return files


def swag_examples(task_cfg, cache_dir: Path, train: bool = True) -> dict:
    """split (train, dev, test when present) -> datasets.Dataset with TEXT_COLUMNS, label, idx;
    without `train`, local files need no train CSV and it is not read."""
    import datasets

    files = swag_files(task_cfg, train)
    if files:
        return {
            split: datasets.Dataset.from_dict(read_swag_csv(p, labelled(split)))
            for split, p in files.items()
        }
    if not task_cfg.hub_path:
        raise SparseBertError(
            f"task={task_cfg.name} has no data source: set task.data_dir=<folder with train.csv "
            "and val.csv>, task.data_files={train: ..., dev: ...} or task.hub_path."
        )
    loaded = load_hub_dataset(
        task_cfg.hub_path,
        task_cfg.hub_config,
        cache_dir,
        "Offline, use a local copy: task.data_dir=<folder with train.csv, val.csv>.",
    )
    require_splits(
        loaded,
        task_cfg.hub_path,
        splits_read(train),
        "Use the original files: task.data_dir=<folder with train.csv and val.csv>.",
    )
    return {
        hub_split_name(name): split.select_columns([*TEXT_COLUMNS, "label"]).add_column(
            "idx", list(range(len(split)))
        )
        for name, split in loaded.items()
        if hub_split_name(name) in OFFICIAL_FILES
    }


def encode(batch: dict, tokenizer, seq_len: int) -> dict:
    """Four (sent1, sent2 + ending) pairs per question (a `datasets.map(batched=True)` function)."""
    count = len(batch["sent1"])
    firsts = [batch["sent1"][i] for i in range(count) for _ in ENDINGS]
    seconds = [f"{batch['sent2'][i]} {batch[e][i]}" for i in range(count) for e in ENDINGS]
    encoded = tokenizer(firsts, seconds, truncation=True, max_length=seq_len)
    size = len(ENDINGS)

    def grouped(values: list) -> list:
        return [values[i * size : (i + 1) * size] for i in range(count)]

    return {
        "input_ids": grouped(encoded["input_ids"]),
        "token_type_ids": grouped(encoded["token_type_ids"]),
        "attention_mask": grouped(encoded["attention_mask"]),
        "labels": batch["label"],
        "idx": batch["idx"],
    }


def load_swag(task_cfg, tokenizer, cache_dir: Path, train: bool = True) -> SwagData:
    """The SWAG splits, tokenized into four sequences per question; `train`: the train split too
    (evaluate does not tokenize it)."""
    import datasets

    examples = swag_examples(task_cfg, cache_dir, train)
    splits = datasets.DatasetDict(
        {
            name: split.map(
                encode,
                batched=True,
                fn_kwargs={"tokenizer": tokenizer, "seq_len": task_cfg.seq_len},
                remove_columns=split.column_names,
            )
            for name, split in examples.items()
            if train or name != "train"
        }
    )
    return SwagData(name=task_cfg.name, splits=splits, pad_token_id=tokenizer.pad_token_id)
