"""GLUE tasks from a folder in the original download layout, from csv files, and from a local
folder through the hub code path; the TSV quirks; and the tokenized splits."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import task_config

from sparsebert_cli.config import conf_dir
from sparsebert_cli.data.glue import GLUE_TASKS, read_glue_file
from sparsebert_cli.data.tasks import load_task
from sparsebert_cli.errors import SparseBertError

MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"


def write_tsv(path: Path, lines: list[str], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def mrpc_rows(count: int) -> list[str]:
    return [
        f"{i % 2}\t{100 + i}\t{200 + i}\tThe company said {i} shares rose.\tShares of the company rose by {i}."
        for i in range(count)
    ]


@pytest.fixture
def glue_dir(tmp_path):
    """MRPC (with the BOM of the real file), CoLA, MNLI and STS-B in the GLUE layout."""
    root = tmp_path / "glue_data"
    write_tsv(root / "MRPC" / "train.tsv", [MRPC_HEADER, *mrpc_rows(30)], bom=True)
    write_tsv(root / "MRPC" / "dev.tsv", [MRPC_HEADER, *mrpc_rows(10)], bom=True)
    test_rows = [
        f"{i}\t{300 + i}\t{400 + i}\tA test sentence {i}.\tAnother one {i}." for i in range(8)
    ]
    write_tsv(root / "MRPC" / "test.tsv", ["index\t#1 ID\t#2 ID\t#1 String\t#2 String", *test_rows])
    cola = [f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\tThe dog barked {i} times." for i in range(12)]
    write_tsv(root / "CoLA" / "train.tsv", cola)
    write_tsv(root / "CoLA" / "dev.tsv", cola[:4])
    write_tsv(root / "CoLA" / "test.tsv", ["index\tsentence", "0\tA cat sat.", "1\tSat cat a."])
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tgold_label"
    labels = ["entailment", "neutral", "contradiction"]
    pairs = [
        f"{i}\t{i}\t{i}e\tfiction\tA man walks {i}.\tA person moves.\t{labels[i % 3]}"
        for i in range(9)
    ]
    for name in ("train", "dev_matched", "dev_mismatched"):
        write_tsv(root / "MNLI" / f"{name}.tsv", [header, *pairs])
    test_header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2"
    write_tsv(root / "MNLI" / "test_matched.tsv", [test_header, "0\t1\t1e\tslate\tA.\tB."])
    write_tsv(
        root / "MNLI" / "test_mismatched.tsv",
        [test_header, "0\t1\t1e\tslate\tC.\tD.", "1\t2\t2e\tslate\tE.\tF."],
    )
    sts_header = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    )
    sts = [
        f"{i}\tmain-news\tf\t2012\t{i}\tnone\tnone\tA plane takes off {i}.\tAn air plane is taking off.\t{i * 0.5:.3f}"
        for i in range(10)
    ]
    write_tsv(root / "STS-B" / "train.tsv", [sts_header, *sts])
    write_tsv(root / "STS-B" / "dev.tsv", [sts_header, *sts[:4]])
    return root


def test_mrpc_glue_dir_gives_train_dev_and_test(glue_dir, tokenizer, tmp_path):
    task = load_task(
        task_config("mrpc", glue_dir=str(glue_dir)), tokenizer, tmp_path / "cache", seed=0
    )
    assert {name: len(split) for name, split in task.splits.items()} == {
        "train": 30,
        "dev": 10,
        "test": 8,
    }
    assert (task.num_labels, task.kind, task.label_names) == (
        2,
        "classification",
        ["0", "1"],
    )
    assert task.splits["train"]["labels"][:4] == [0, 1, 0, 1]
    assert task.splits["test"]["labels"] == [-1] * 8
    assert task.splits["test"]["idx"] == list(range(8))


def test_evaluation_neither_needs_nor_tokenizes_the_train_split(glue_dir, tokenizer, tmp_path):
    """evaluate required train.tsv and tokenized it for nothing (393k pairs on MNLI)."""
    folder = tmp_path / "glue"
    shutil.copytree(glue_dir / "MRPC", folder / "MRPC")
    (folder / "MRPC" / "train.tsv").unlink()
    config = task_config("mrpc", glue_dir=str(folder))
    task = load_task(config, tokenizer, tmp_path / "cache", seed=0, train=False)
    assert {name: len(split) for name, split in task.splits.items()} == {"dev": 10, "test": 8}
    with pytest.raises(SparseBertError, match="has no .*train.tsv"):
        load_task(config, tokenizer, tmp_path / "cache", seed=0)


def test_sentence_pairs_get_segment_ids_and_are_truncated_to_seq_len(glue_dir, tokenizer, tmp_path):
    task = load_task(
        task_config("mrpc", glue_dir=str(glue_dir), seq_len=12),
        tokenizer,
        tmp_path / "cache",
        seed=0,
    )
    example = task.splits["train"][0]
    sep = tokenizer.sep_token_id
    assert len(example["input_ids"]) == 12
    assert example["input_ids"][0] == tokenizer.cls_token_id and example["input_ids"][-1] == sep
    first_sep = example["input_ids"].index(sep)
    assert example["token_type_ids"] == [0] * (first_sep + 1) + [1] * (11 - first_sep)


def test_quote_characters_are_literal_text(tmp_path):
    path = tmp_path / "train.tsv"
    write_tsv(
        path,
        [
            MRPC_HEADER,
            '1\t1\t2\t"He said "no.\tHe refused.',
            "0\t3\t4\tA second row.\tAnother row.",
        ],
    )
    columns, skipped, _ = read_glue_file(path, GLUE_TASKS["mrpc"], ["0", "1"], labelled=True)
    assert columns["text_a"] == ['"He said "no.', "A second row."]
    assert skipped == 0


def test_lines_with_a_wrong_field_count_are_skipped_and_counted(tmp_path):
    path = tmp_path / "train.tsv"
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    write_tsv(
        path,
        [header, "0\t1\t2\tWhy?\tWhy not?\t1", "1\t3\t4\tHow?\n", "2\t5\t6\tWho?\tWhom?\t0\textra"],
    )
    columns, skipped, unknown = read_glue_file(path, GLUE_TASKS["qqp"], ["0", "1"], labelled=True)
    assert (columns["text_a"], columns["label"], skipped, unknown) == (["Why?"], [1], 2, set())
    # each row keeps the index of its line: predictions/dev.jsonl's idx after a skipped line
    # named the next row's neighbour (a running count of the rows kept)
    write_tsv(path, [header, "0\t1\t2\tHow?\n", "1\t3\t4\tWhy?\tWhy not?\t1"])
    assert read_glue_file(path, GLUE_TASKS["qqp"], ["0", "1"], labelled=True)[0]["idx"] == [1]


def test_a_test_file_index_that_is_not_a_number_is_refused(tmp_path):
    """An index 'zero' ended in int()'s ValueError traceback."""
    path = tmp_path / "test.tsv"
    write_tsv(path, ["id\tquestion1\tquestion2", "0\tWhy?\tWhy not?", "zero\tHow?\tHow so?"])
    with pytest.raises(
        SparseBertError, match=r"test.tsv: data row 2 has the id 'zero', not a whole"
    ):
        read_glue_file(path, GLUE_TASKS["qqp"], ["0", "1"], labelled=False)


def test_a_test_file_row_with_a_wrong_field_count_is_refused_not_skipped(tmp_path):
    """A test row with an extra tab was left out of the submission file (9 of 10 rows), which
    the GLUE server refuses; training rows may be skipped, test rows each need a prediction."""
    path = tmp_path / "test.tsv"
    header = "id\tquestion1\tquestion2"
    write_tsv(path, [header, "0\tWhy?\tWhy not?", "1\tHow?\tHow so?\textra"])
    with pytest.raises(SparseBertError, match=r"test.tsv: a row has 4 tab-separated fields, its"):
        read_glue_file(path, GLUE_TASKS["qqp"], ["0", "1"], labelled=False)


def test_a_header_only_test_file_is_left_out_with_a_warning(glue_dir, tokenizer, tmp_path, caplog):
    """An empty test split failed later in a column cast with a traceback."""
    folder = tmp_path / "glue"
    shutil.copytree(glue_dir / "MRPC", folder / "MRPC")
    test = folder / "MRPC" / "test.tsv"
    test.write_text(test.read_text().splitlines()[0] + "\n")
    task = load_task(task_config("mrpc", glue_dir=str(folder)), tokenizer, tmp_path / "c", seed=0)
    assert set(task.splits) == {"train", "dev"}
    assert f"{test} has no usable rows: no test predictions are written" in caplog.text


def test_cola_train_has_no_header_and_its_test_has_one(glue_dir, tokenizer, tmp_path):
    task = load_task(
        task_config("cola", glue_dir=str(glue_dir)), tokenizer, tmp_path / "cache", seed=0
    )
    assert (len(task.splits["train"]), len(task.splits["dev"]), len(task.splits["test"])) == (
        12,
        4,
        2,
    )
    assert task.splits["train"]["labels"][:3] == [0, 1, 0]
    assert (
        tokenizer.decode(task.splits["test"][1]["input_ids"], skip_special_tokens=True)
        == "sat cat a."
    )


def test_mnli_has_matched_and_mismatched_dev_and_test(glue_dir, tokenizer, tmp_path):
    task = load_task(
        task_config("mnli", glue_dir=str(glue_dir)), tokenizer, tmp_path / "cache", seed=0
    )
    assert sorted(task.splits) == ["dev", "dev_mismatched", "test", "test_mismatched", "train"]
    assert (len(task.splits["test"]), len(task.splits["test_mismatched"])) == (1, 2)
    assert task.splits["dev_mismatched"]["labels"][:3] == [0, 1, 2]


def test_stsb_labels_are_floats(glue_dir, tokenizer, tmp_path):
    task = load_task(
        task_config("stsb", glue_dir=str(glue_dir)), tokenizer, tmp_path / "cache", seed=0
    )
    assert task.kind == "regression" and task.num_labels == 1
    assert task.splits["dev"]["labels"] == [0.0, 0.5, 1.0, 1.5]
    assert "test" not in task.splits
    assert task.collate([task.splits["dev"][1]])["labels"].dtype.is_floating_point


def test_a_glue_folder_beside_another_task_is_not_read_nor_part_of_its_identity(
    glue_dir, tokenizer, tmp_path
):
    """A sweep over task=polarity,mrpc with task.glue_dir set for MRPC: the polarity job was
    refused ("not a GLUE task ... pick a GLUE task"), so one table could not come from one
    sweep; it reads its own data, as a job without the folder, and is that job."""
    from sparsebert_cli.data.config import task_identity

    cache = tmp_path / "cache"
    beside = load_task(task_config("polarity", glue_dir=str(glue_dir)), tokenizer, cache, seed=0)
    alone = load_task(task_config("polarity"), tokenizer, cache, seed=0)
    assert beside.splits["dev"]["input_ids"] == alone.splits["dev"]["input_ids"]
    polarity = {"name": "polarity", "glue_dir": str(glue_dir), "fold": 0}
    assert task_identity(polarity) == task_identity({**polarity, "glue_dir": None}) == {
        "name": "polarity", "glue_dir": None, "fold": 0
    }  # fmt: skip
    mrpc = {"name": "mrpc", "glue_dir": str(glue_dir)}
    assert task_identity(mrpc) == mrpc


def test_missing_task_folder_names_the_expected_layout(tmp_path, tokenizer):
    with pytest.raises(
        SparseBertError, match=r"RTE/train.tsv.*<glue_dir>/RTE/\{train.tsv, dev.tsv, test.tsv\}"
    ):
        load_task(task_config("rte", glue_dir=str(tmp_path)), tokenizer, tmp_path / "cache", seed=0)


def test_collate_pads_with_the_pad_token_to_the_longest_example(glue_dir, tokenizer, tmp_path):
    task = load_task(
        task_config("cola", glue_dir=str(glue_dir)), tokenizer, tmp_path / "cache", seed=0
    )
    batch = task.collate([task.splits["test"][0], task.splits["dev"][0]])
    short = len(task.splits["test"][0]["input_ids"])
    longest = len(task.splits["dev"][0]["input_ids"])
    assert batch["input_ids"].shape == (2, longest)
    assert batch["input_ids"][0, short:].tolist() == [tokenizer.pad_token_id] * (longest - short)
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (longest - short)
    assert batch["labels"].tolist() == [-1, 0]


@pytest.mark.parametrize(("idx", "refused"), [("7", None), ("a7", "'a7'"), ("7.5", "7.5")])
def test_a_data_files_idx_column_is_a_whole_number_or_refused(tmp_path, tokenizer, idx, refused):
    """An idx column of words ended in pyarrow's ArrowInvalid traceback."""
    rows = ["idx,sentence,label", f"{idx},A fine film.,1", "8,A dull film.,0"]
    for name in ("train", "dev"):
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    files = {"train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv")}
    load = lambda: load_task(  # noqa: E731
        task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0
    )
    if refused is None:
        assert load().splits["dev"]["idx"] == [7, 8]
        return
    with pytest.raises(SparseBertError, match=f"has the idx {refused} in data row 1, not a whole"):
        load()


def test_csv_data_files_with_label_names(tmp_path, tokenizer):
    rows = [
        "question,sentence,label",
        "Who won?,The home team won.,entailment",
        "Where?,It rained.,not_entailment",
    ]
    for name in ("train", "dev"):
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    files = {"train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv")}
    task = load_task(task_config("qnli", data_files=files), tokenizer, tmp_path / "cache", seed=0)
    assert task.splits["dev"]["labels"] == [0, 1]
    assert task.splits["dev"]["idx"] == [0, 1]


@pytest.mark.parametrize(
    ("task", "rows", "message"),
    [
        ("qnli", "question,sentence,label\nWho?,Me.,maybe\n", "label 'maybe'"),
        # a regression's label must be a number (it was float()'s traceback)
        ("stsb", "sentence1,sentence2,label\na,b,negative\n", "but the task is a regression"),
    ],
)
def test_a_label_the_task_cannot_read_is_refused(tmp_path, tokenizer, task, rows, message):
    for name in ("train", "dev"):
        (tmp_path / f"{name}.csv").write_text(rows)
    files = {"train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv")}
    with pytest.raises(SparseBertError, match=message):
        load_task(task_config(task, data_files=files), tokenizer, tmp_path / "cache", seed=0)


def test_a_class_id_outside_the_tasks_classes_is_refused(tmp_path, tokenizer):
    """SST-2 has classes 0 and 1: a dev label 2 was scored as a wrong prediction (a train label
    2 failed inside the loss with a traceback)."""
    (tmp_path / "train.csv").write_text("sentence,label\ngood,1\nbad,0\n")
    (tmp_path / "dev.csv").write_text("sentence,label\ngood,1\nfine,2\n")
    files = {"train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv")}
    more = r"set task.num_labels and task.label_names \(e.g. task.num_labels=3 .*=\[0,1,2\]\)"
    with pytest.raises(
        SparseBertError, match=f"has the label 2, but the task's classes are 0..1. .*{more}"
    ):
        load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)
    # MRPC computes binary F1: "set task.num_labels=3 ..." was then refused ("computes binary F1")
    with pytest.raises(
        SparseBertError, match=r"classes are 0..1. Fix .* task=mrpc computes binary"
    ):
        load_task(task_config("mrpc", data_files=files, text_fields=["sentence"]), tokenizer,
                  tmp_path / "cache", seed=0)  # fmt: skip


@pytest.mark.parametrize(
    ("dev", "words"),
    [
        ('sentence,label\n"unclosed,1\nok,0\n', "ParserError"),
        ("sentence,label\ngood,1\nbad,0,extra,more\n", "Expected 2 fields"),
        ("sentence,label\n", 'Instruction "dev" corresponds to no data'),
    ],
    ids=["unclosed-quote", "ragged-row", "header-only"],
)
def test_a_malformed_data_file_is_refused_naming_it(tmp_path, tokenizer, dev, words):
    """These ended in datasets' 60-line traceback."""
    (tmp_path / "train.csv").write_text("sentence,label\ngood,1\nbad,0\n")
    (tmp_path / "dev.csv").write_text(dev)
    files = {"train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv")}
    with pytest.raises(SparseBertError, match="Could not read") as info:
        load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)
    assert words in str(info.value) and str(tmp_path / "dev.csv") in str(info.value)


def test_files_whose_columns_differ_are_refused_naming_each_files_columns(tmp_path, tokenizer):
    """datasets said only "Couldn't cast ... because column names don't match" of the files."""
    (tmp_path / "train.csv").write_text("sentence,target\ngood,1\nbad,0\n")
    (tmp_path / "dev.csv").write_text("sentence,label\ngood,1\n")
    files = {"train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv")}
    expected = (
        f"The files' columns differ ({tmp_path / 'train.csv'} has ['sentence', 'target']; "
        f"{tmp_path / 'dev.csv'} has ['sentence', 'label']): give every split the same columns"
    )
    with pytest.raises(SparseBertError) as info:
        load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)
    assert expected in str(info.value)


@pytest.mark.parametrize("cell", ["-1", "", "nan"])
def test_a_dev_row_without_a_valid_label_is_refused(tmp_path, tokenizer, cell):
    """−1 marks a test row; in a dev file it was scored as a wrong prediction."""
    (tmp_path / "train.csv").write_text("sentence,label\ngood,1\nbad,0\n")
    (tmp_path / "dev.csv").write_text(f"sentence,label\ngood,1\nfine,{cell}\n")
    files = {"train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv")}
    # 'nan' is a word, not a missing value, in a csv cell: the int labels cannot parse it
    refused = r"dev.csv has (the label -1|a row without a label)|parse string: 'nan'"
    with pytest.raises(SparseBertError, match=refused):
        load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)


def test_an_unlabelled_test_file_beside_labelled_ones_gets_label_minus_one(tmp_path, tokenizer):
    """`datasets` gives every split the train file's columns: the test rows' label was None."""
    (tmp_path / "train.csv").write_text("sentence,label\ngood,1\nbad,0\n")
    (tmp_path / "test.csv").write_text("sentence\nfine\nawful\n")
    files = {split: str(tmp_path / f"{split}.csv") for split in ("train", "test")}
    files["dev"] = files["train"]
    task = load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)
    assert task.splits["test"]["labels"] == [-1, -1] and task.splits["dev"]["labels"] == [1, 0]


def test_hub_path_loads_a_local_dataset_folder_with_glue_split_names(tmp_path, tokenizer):
    folder = tmp_path / "glue-rte"
    folder.mkdir()
    for split, label in (("train", 0), ("validation", 1), ("test", -1)):
        rows = [
            {"sentence1": f"A {split}.", "sentence2": "B.", "label": label, "idx": i}
            for i in range(3)
        ]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = load_task(
        task_config("rte", hub_path=str(folder), hub_config=None),
        tokenizer,
        tmp_path / "cache",
        seed=0,
    )
    assert sorted(task.splits) == ["dev", "test", "train"]
    assert (task.splits["dev"]["labels"], task.splits["test"]["labels"]) == (
        [1, 1, 1],
        [-1, -1, -1],
    )


def test_unreachable_hub_names_the_dataset_and_local_alternatives(tmp_path):
    script = (
        "from pathlib import Path\n"
        "from omegaconf import OmegaConf\n"
        "from sparsebert_cli.data.config import TaskConfig\n"
        "from sparsebert_cli.data.tasks import load_task\n"
        "from sparsebert_cli.data.tokenizer import embedded_tokenizer_folder, tokenizer_from_folder\n"
        "from sparsebert_cli.errors import SparseBertError\n"
        "cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), OmegaConf.load(Path('conf/task/mrpc.yaml')))\n"
        "try:\n"
        f"    load_task(cfg, tokenizer_from_folder(embedded_tokenizer_folder()), Path({str(tmp_path)!r}), 0)\n"
        "except SparseBertError as error:\n"
        "    print(error)\n"
    )
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        cwd=conf_dir().parent,
        check=True,
    )
    message = result.stdout
    assert "'nyu-mll/glue' (config 'mrpc')" in message
    assert "task.glue_dir=<folder with MRPC/train.tsv, dev.tsv, test.tsv>" in message
    assert "task=polarity or task=lee_sts" in message


def test_tsv_data_files_are_read_without_quoting(tmp_path, tokenizer):
    rows = 'sentence1\tsentence2\tlabel\n"He said "no.\tHe refused.\tentailment\nC d.\tE f.\tnot_entailment\n'
    for name in ("train", "dev"):
        (tmp_path / f"{name}.tsv").write_text(rows)
    files = {"train": str(tmp_path / "train.tsv"), "dev": str(tmp_path / "dev.tsv")}
    task = load_task(task_config("rte", data_files=files), tokenizer, tmp_path / "cache", seed=0)
    first = tokenizer.decode(task.splits["dev"][0]["input_ids"], skip_special_tokens=True)
    assert (first, task.splits["dev"]["labels"]) == ('" he said " no. he refused.', [0, 1])


def test_a_hub_dataset_without_a_validation_split_is_refused_before_training(tmp_path, tokenizer):
    """imdb-like (train and test only): fine-tuning ran a whole epoch, then stopped at the first
    evaluation with a bare KeyError: 'dev'."""
    folder = tmp_path / "no-validation"
    folder.mkdir()
    for split in ("train", "test"):
        rows = [{"sentence": f"A {split} sentence.", "label": i % 2} for i in range(3)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(SparseBertError) as refused:
        load_task(task_config("sst2", hub_path=str(folder), hub_config=None), tokenizer,
                  tmp_path / "cache", seed=0)  # fmt: skip
    message = str(refused.value)
    assert f"the dataset '{folder}' has the splits ['test', 'train']" in message
    assert "finds no dev" in message and "task.data_files={train: <file>, dev: <file>}" in message


@pytest.mark.parametrize(
    ("task", "splits", "missing"),
    [("squad", ("train",), "dev"), ("swag", ("validation", "test"), "train")],
)
def test_squad_and_swag_hub_datasets_without_a_split_they_read_are_refused(
    tmp_path, task, splits, missing
):
    from sparsebert_cli.data.squad import squad_examples
    from sparsebert_cli.data.swag import swag_examples

    folder = tmp_path / "hub-copy"
    folder.mkdir()
    for split in splits:  # refused before any column is read
        (folder / f"{split}.jsonl").write_text('{"a": 1}\n')
    read = {"squad": squad_examples, "swag": swag_examples}[task]
    with pytest.raises(SparseBertError, match=f"'{folder}' has the splits .* finds no {missing}"):
        read(task_config(task, hub_path=str(folder), hub_config=None), tmp_path / "cache")


def _sst2_files(tmp_path: Path, dev: str, suffix: str = "csv") -> dict[str, str]:
    (tmp_path / f"train.{suffix}").write_text("sentence,label\ngood,1\nbad,0\n")
    (tmp_path / f"dev.{suffix}").write_text(dev)
    return {"train": str(tmp_path / f"train.{suffix}"), "dev": str(tmp_path / f"dev.{suffix}")}


def test_an_edited_data_file_with_its_old_modification_time_is_read_again(tmp_path, tokenizer):
    """`datasets` keys its cache of a local file by the modification time alone: after `cp -p`
    or `tar x` the old rows came back under the new file's fingerprint."""
    files = _sst2_files(tmp_path, "sentence,label\nfine,1\n")
    dev = Path(files["dev"])
    os.utime(dev, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    cache = tmp_path / "cache"
    first = load_task(task_config("sst2", data_files=files), tokenizer, cache, seed=0)
    dev.write_text("sentence,label\nawful,0\nsplendid,1\n")
    os.utime(dev, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    second = load_task(task_config("sst2", data_files=files), tokenizer, cache, seed=0)
    assert (first.splits["dev"]["labels"], second.splits["dev"]["labels"]) == ([1], [0, 1])


def test_words_pandas_reads_as_missing_are_text(tmp_path, tokenizer):
    files = _sst2_files(tmp_path, "sentence,label\nNA,1\nnull,0\nNone,1\nnan,0\n")
    task = load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)
    words = [tokenizer.decode(ids[1:-1]) for ids in task.splits["dev"]["input_ids"]]
    assert words == ["na", "null", "none", "nan"]


def test_numbers_in_a_text_column_are_text_as_written(tmp_path, tokenizer):
    """A column of numbers was read as int64 and every row refused as "an empty cell"."""
    files = _sst2_files(tmp_path, "sentence,label\n1,1\n2.50,0\n")
    Path(files["train"]).write_text("sentence,label\n3,1\n4,0\n")
    task = load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)
    words = [tokenizer.decode(ids[1:-1]) for ids in task.splits["dev"]["input_ids"]]
    assert words == ["1", "2. 50"]


def test_a_number_where_text_belongs_in_json_is_refused_as_not_text(tmp_path, tokenizer):
    files = _sst2_files(tmp_path, '{"sentence": 7, "label": 0}\n', "jsonl")
    Path(files["train"]).write_text('{"sentence": 8, "label": 1}\n')
    with pytest.raises(SparseBertError, match=r"data row 1 \(8, not a string\)"):
        load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)


@pytest.mark.parametrize(
    ("suffix", "dev"),
    [("csv", 'sentence,label\ngood,1\n"",0\n'), ("jsonl", '{"sentence": null, "label": 0}\n')],
)
def test_a_row_without_its_text_is_refused_naming_the_row(tmp_path, tokenizer, suffix, dev):
    """The tokenizer's TypeError ('TextInputSequence must be str') with a traceback, before."""
    files = _sst2_files(tmp_path, dev, suffix)
    if suffix == "jsonl":
        Path(files["train"]).write_text('{"sentence": "good", "label": 1}\n')
    with pytest.raises(SparseBertError, match=r"no text in 'sentence' in data row \d"):
        load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)


def test_an_empty_json_file_is_refused_naming_it(tmp_path, tokenizer):
    """datasets' json reader raised a bare StopIteration."""
    files = _sst2_files(tmp_path, "", "json")
    Path(files["train"]).write_text('[{"sentence": "good", "label": 1}]')
    with pytest.raises(SparseBertError, match="Could not read") as info:
        load_task(task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0)
    assert files["dev"] in str(info.value)


def test_evaluation_reads_data_files_without_a_train_file(tmp_path, tokenizer):
    (tmp_path / "dev.csv").write_text("sentence,label\nfine,1\n")
    files = {"dev": str(tmp_path / "dev.csv")}
    task = load_task(
        task_config("sst2", data_files=files), tokenizer, tmp_path / "cache", seed=0, train=False
    )
    assert list(task.splits) == ["dev"]


def test_a_non_finite_sts_score_in_a_glue_file_is_skipped_as_an_invalid_label(glue_dir):
    lines = (glue_dir / "STS-B" / "dev.tsv").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tnan"
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tinf"
    write_tsv(glue_dir / "STS-B" / "dev.tsv", lines)
    columns, skipped, _ = read_glue_file(
        glue_dir / "STS-B" / "dev.tsv", GLUE_TASKS["stsb"], [], labelled=True
    )
    assert (columns["label"], skipped) == ([0.0, 1.5], 2)


def test_an_unknown_hub_config_is_refused_naming_the_configs(tmp_path):
    from sparsebert_cli.data.hub import load_hub_dataset

    folder = tmp_path / "glue-rte"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"sentence1": "A.", "sentence2": "B.", "label": 0}\n')
    with pytest.raises(SparseBertError, match="has no config 'rtee'"):
        load_hub_dataset(str(folder), "rtee", tmp_path / "cache", "")


def test_evaluate_of_a_non_glue_run_with_a_glue_folder_says_to_drop_it(tmp_path):
    """The fix said "or pick a GLUE task", which evaluate cannot: its task is the run's."""
    from omegaconf import OmegaConf

    from sparsebert_cli.data.config import recorded_task
    from sparsebert_cli.errors import SparseBertError

    recorded = {"name": "lee_sts", "kind": "regression", "glue_dir": None, "data_dir": None,
                "data_files": {}}  # fmt: skip
    given = OmegaConf.create({"glue_dir": str(tmp_path), "data_dir": None, "data_files": {}})
    with pytest.raises(SparseBertError) as refused:
        recorded_task(recorded, given, tmp_path / "run")
    said = str(refused.value)
    assert "task=lee_sts is not a GLUE task" in said and "drop task.glue_dir." in said
    assert "pick a GLUE task" not in said and f"finetune run {tmp_path / 'run'}" in said
