"""SWAG: the original CSV layout, four sequences per question, multiple-choice batches and the
masked multiple-choice model."""

import csv

import pytest
import torch
from conftest import task_config, tiny_model
from omegaconf import OmegaConf

from sparsebert_cli.config import ModelConfig
from sparsebert_cli.data.swag import load_swag, read_swag_csv, swag_examples
from sparsebert_cli.data.tokenizer import embedded_tokenizer_folder, tokenizer_from_folder
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.modeling import (
    MaskSource,
    SparseBertForMultipleChoice,
    build_task_model,
    load_checkpoint,
    save_checkpoint,
)

HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source"]
ENDINGS = ["ending0", "ending1", "ending2", "ending3"]
ROWS = [
    ("She opens the fridge.", "She", ["takes out the milk.", "flies.", "sings.", "melts."], 0),
    ("A dog sees a ball.", "The dog", ["reads.", "runs after the ball.", "naps.", "hums."], 1),
    ("The chef chops onions.", "He", ["swims.", "drives.", "orbits.", "fries them."], 3),
]
VOCAB, N = 60, 12


def write_csv(path, rows=ROWS, labelled: bool = True) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER + ENDINGS + (["label"] if labelled else []))
        for i, (sent1, sent2, endings, label) in enumerate(rows):
            row = [i, f"v{i}", i, f"{sent1} {sent2}", sent1, sent2, "gold", *endings]
            writer.writerow(row + ([label] if labelled else []))


@pytest.fixture(scope="module")
def swag(tmp_path_factory):
    folder = tmp_path_factory.mktemp("swag")
    write_csv(folder / "train.csv")
    write_csv(folder / "val.csv")
    config = task_config("swag", data_dir=str(folder))
    return load_swag(config, tokenizer_from_folder(embedded_tokenizer_folder()), folder)


def test_the_original_csv_reads_sentences_endings_and_labels(tmp_path):
    write_csv(tmp_path / "val.csv")
    columns = read_swag_csv(tmp_path / "val.csv")
    assert columns["sent2"] == ["She", "The dog", "He"] and columns["label"] == [0, 1, 3]
    assert columns["ending3"][2] == "fries them."


def test_an_unlabelled_test_csv_gets_label_minus_one(tmp_path):
    write_csv(tmp_path / "test.csv", labelled=False)
    assert read_swag_csv(tmp_path / "test.csv", labelled=False)["label"] == [-1, -1, -1]


def test_a_train_or_dev_csv_without_labels_is_refused(tmp_path):
    """A val.csv without its label column was read as unlabelled: every dev label -1, accuracy 0
    written as the run's result (and a train.csv so ended in 'IndexError: Target -1')."""
    write_csv(tmp_path / "val.csv", labelled=False)
    with pytest.raises(SparseBertError, match=r"lacks the SWAG column\(s\) \['label'\] \(a train"):
        read_swag_csv(tmp_path / "val.csv")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        # a header-only file was said to lack the columns its header has
        (",".join(HEADER + ENDINGS + ["label"]) + "\n", "has a header but no rows"),
        ("", "lacks the SWAG column(s)"),
        # a short row: float(None) (TypeError traceback)
        (",".join(HEADER + ENDINGS + ["label"]) + "\n0,v0,0,a b,a,b,gold,x\n", "row 1 has fewer"),
    ],
)
def test_a_csv_without_examples_or_with_a_short_row_is_refused(tmp_path, content, words):
    (tmp_path / "val.csv").write_text(content)
    with pytest.raises(SparseBertError) as refused:
        read_swag_csv(tmp_path / "val.csv")
    assert words in str(refused.value)


def test_a_csv_that_is_not_utf8_is_refused(tmp_path):
    """A Latin-1 CSV ended in UnicodeDecodeError's traceback."""
    write_csv(tmp_path / "val.csv", rows=[("Sie öffnet.", *ROWS[0][1:])])
    (tmp_path / "val.csv").write_bytes((tmp_path / "val.csv").read_text().encode("latin-1"))
    with pytest.raises(SparseBertError, match="is not UTF-8 text .* SWAG's CSVs are UTF-8"):
        read_swag_csv(tmp_path / "val.csv")


def test_a_test_file_with_the_hubs_label_minus_one_is_read_unlabelled(tmp_path):
    """The originals' test split carries -1 (or nothing) as its label; it was refused as 'not
    the number of the right ending'."""
    rows = [(s1, s2, endings, -1) for s1, s2, endings, _ in ROWS]
    for name in ("train", "val"):
        write_csv(tmp_path / f"{name}.csv")
    write_csv(tmp_path / "test.csv", rows)
    examples = swag_examples(task_config("swag", data_dir=str(tmp_path)), tmp_path / "cache")
    assert examples["test"]["label"] == [-1, -1, -1]


def test_a_label_that_is_not_an_ending_is_refused(tmp_path):
    """Label 4 of four endings was scored as a wrong prediction."""
    write_csv(tmp_path / "val.csv", rows=[(*ROWS[0][:3], 4)])
    with pytest.raises(SparseBertError, match="has the label 4, but the task's classes are 0..3"):
        read_swag_csv(tmp_path / "val.csv")
    write_csv(tmp_path / "val.csv", rows=[(*ROWS[0][:3], "first")])
    with pytest.raises(SparseBertError, match="has the label 'first', not the number"):
        read_swag_csv(tmp_path / "val.csv")


def test_a_csv_without_the_swag_columns_is_refused(tmp_path):
    (tmp_path / "val.csv").write_text("sentence,label\nhello,1\n")
    with pytest.raises(SparseBertError, match=r"lacks the SWAG column\(s\) \['sent1'"):
        read_swag_csv(tmp_path / "val.csv")


def test_evaluation_neither_needs_nor_reads_a_train_csv(tmp_path):
    """evaluate refused a SWAG folder without train.csv (it needs only val.csv)."""
    write_csv(tmp_path / "val.csv")
    tokenizer = tokenizer_from_folder(embedded_tokenizer_folder())
    for source in ({"data_dir": str(tmp_path)}, {"data_files": {"dev": str(tmp_path / "val.csv")}}):
        config = task_config("swag", **source)
        data = load_swag(config, tokenizer, tmp_path / "cache", train=False)
        assert {name: len(split) for name, split in data.splits.items()} == {"dev": 3}
    config = task_config("swag", data_dir=str(tmp_path))
    with pytest.raises(SparseBertError, match="needs a train and a dev CSV.*train.csv"):
        load_swag(config, tokenizer, tmp_path / "cache")
    (tmp_path / "val.csv").unlink()
    with pytest.raises(SparseBertError, match=r"needs a dev CSV .* Put val.csv in task.data_dir"):
        load_swag(config, tokenizer, tmp_path / "cache", train=False)


def test_each_choice_pairs_the_context_with_sent2_and_its_ending(swag):
    tokenizer = tokenizer_from_folder(embedded_tokenizer_folder())
    row = swag.splits["dev"][0]
    assert [tokenizer.decode(ids) for ids in row["input_ids"][:2]] == [
        "[CLS] she opens the fridge. [SEP] she takes out the milk. [SEP]",
        "[CLS] she opens the fridge. [SEP] she flies. [SEP]",
    ]


def test_a_batch_is_batch_by_four_choices_by_the_longest_sequence(swag):
    rows = [swag.splits["train"][i] for i in range(3)]
    longest = max(len(ids) for row in rows for ids in row["input_ids"])
    batch = swag.collate(rows)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, 4, longest)
    assert batch["labels"].tolist() == [0, 1, 3]


def test_padding_is_masked_out_in_every_choice(swag):
    rows = [swag.splits["train"][i] for i in range(3)]
    batch = swag.collate(rows)
    lengths = [[len(ids) for ids in row["input_ids"]] for row in rows]
    assert batch["attention_mask"].sum(-1).tolist() == lengths


def tiny() -> ModelConfig:
    return tiny_model()


def no_diag_source() -> MaskSource:
    return MaskSource.from_config(OmegaConf.structured(MaskConfig(name="no_diag")), 2, 2, N)


def choices_batch() -> dict:
    ids = torch.randint(1, VOCAB, (2, 4, N), generator=torch.Generator().manual_seed(3))
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }


def test_the_multiple_choice_model_scores_each_choice_and_gives_a_loss():
    torch.manual_seed(0)
    model = build_task_model(tiny(), no_diag_source(), 4, "multiple_choice", None, VOCAB)
    out = model(**choices_batch(), labels=torch.tensor([0, 3]))
    assert out.logits.shape == (2, 4) and out.loss.ndim == 0


def test_a_multiple_choice_checkpoint_reloads_with_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = build_task_model(tiny(), no_diag_source(), 4, "multiple_choice", None, VOCAB).eval()
    save_checkpoint(model, tmp_path, {})
    loaded = load_checkpoint(tmp_path, tiny())
    with torch.no_grad():
        assert isinstance(loaded, SparseBertForMultipleChoice)
        assert torch.equal(loaded(**choices_batch()).logits, model(**choices_batch()).logits)
