"""The embedded tasks: polarity (sentence sentiment) and lee_sts (document-pair similarity), with
their seeded cross-validation folds."""

import pytest
from conftest import compose_cfg, task_config

from sparsebert_cli.data.tasks import lee_sts_splits, load_task, polarity_splits
from sparsebert_cli.data.tokenizer import embedded_tokenizer_folder, tokenizer_from_folder
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.validation import validate_config


def test_polarity_dev_folds_partition_the_200_sentences():
    dev_sets = [
        set(polarity_splits(task_config("polarity", fold=fold), seed=0)["dev"]["idx"])
        for fold in range(5)
    ]
    assert [len(dev) for dev in dev_sets] == [40] * 5
    assert set().union(*dev_sets) == set(range(200))


def test_polarity_folds_are_stratified_by_label():
    splits = polarity_splits(task_config("polarity", fold=2), seed=0)
    assert sorted(splits["dev"]["label"]).count(1) == 20
    assert sorted(splits["train"]["label"]).count(1) == 80


def test_polarity_train_excludes_the_dev_fold():
    splits = polarity_splits(task_config("polarity"), seed=0)
    assert set(splits["train"]["idx"]).isdisjoint(splits["dev"]["idx"])


def test_polarity_folds_depend_on_the_seed_only():
    config = task_config("polarity")
    assert (
        polarity_splits(config, seed=3)["dev"]["idx"]
        == polarity_splits(config, seed=3)["dev"]["idx"]
    )
    assert (
        polarity_splits(config, seed=3)["dev"]["idx"]
        != polarity_splits(config, seed=4)["dev"]["idx"]
    )


def test_polarity_keeps_the_real_sentences_and_labels():
    splits = polarity_splits(task_config("polarity", fold=0), seed=0)
    examples = {
        i: (text, label)
        for split in splits.values()
        for i, text, label in zip(split["idx"], split["text_a"], split["label"], strict=True)
    }
    assert examples[0] == ("simplistic , silly and tedious .", 0)
    assert examples[199][1] == 1


def test_lee_sts_folds_split_documents_so_train_and_dev_share_none():
    splits = lee_sts_splits(task_config("lee_sts"), seed=0)
    assert (len(splits["train"]), len(splits["dev"])) == (780, 45)
    train_documents = set(splits["train"]["text_a"]) | set(splits["train"]["text_b"])
    dev_documents = set(splits["dev"]["text_a"]) | set(splits["dev"]["text_b"])
    assert (len(train_documents), len(dev_documents)) == (40, 10)
    assert train_documents.isdisjoint(dev_documents)


def test_lee_sts_dev_folds_cover_225_of_the_1225_pairs_once():
    dev = [
        pair
        for fold in range(5)
        for pair in lee_sts_splits(task_config("lee_sts", fold=fold), seed=0)["dev"]["idx"]
    ]
    assert len(dev) == len(set(dev)) == 225
    assert max(dev) < 1225


def test_lee_sts_labels_are_the_human_similarities():
    # Pairs 0 and 1 are documents (0, 1) and (0, 2): the matrix's first row reads 1, 0.3, 0.24.
    labels = {}
    for fold in range(5):
        for split in lee_sts_splits(task_config("lee_sts", fold=fold), seed=0).values():
            labels.update(zip(split["idx"], split["label"], strict=True))
    assert (labels[0], labels[1]) == pytest.approx((0.3, 0.24))


def test_lee_sts_loads_as_a_tokenized_regression_task(tmp_path):
    tokenizer = tokenizer_from_folder(embedded_tokenizer_folder())
    task = load_task(task_config("lee_sts", seq_len=64), tokenizer, tmp_path, seed=0)
    assert (task.kind, task.num_labels, task.label_names) == ("regression", 1, [])
    assert max(len(ids) for ids in task.splits["dev"]["input_ids"]) == 64


@pytest.mark.parametrize(("fold", "num_folds"), [(5, 5), (-1, 5), (0, 1)])
def test_fold_outside_the_folds_is_refused_at_the_boundary(fold, num_folds):
    """Folds are ranged once, by validation (config.RANGES and the fold < num_folds check)."""
    cfg = compose_cfg(
        "finetune", "task=polarity", f"task.fold={fold}", f"task.num_folds={num_folds}"
    )
    with pytest.raises(SparseBertError, match=r"task\.(fold|num_folds)="):
        validate_config(cfg)


def test_num_labels_disagreeing_with_label_names_is_refused_by_validation():
    """docs/extending.md's 3 classes under task=sst2 passed `validate` and failed in the run."""
    cfg = compose_cfg("finetune", "task=sst2", "task.num_labels=3")
    with pytest.raises(
        SparseBertError, match=r"task.label_names has 2 names.*label_names=\[0,1,2\]"
    ):
        validate_config(cfg)
    validate_config(compose_cfg("finetune", "task=sst2", "task.num_labels=3",
                                "task.label_names=[0,1,2]"))  # fmt: skip


def test_a_label_name_given_twice_is_refused_by_validation():
    """task.label_names=[a,a] was accepted: its two classes read as one."""
    cfg = compose_cfg("finetune", "task=polarity", "task.label_names=[neg,neg]")
    with pytest.raises(SparseBertError, match=r"names neg twice: each class needs its own name"):
        validate_config(cfg)


def test_the_longest_batch_is_the_longest_sequence_of_any_split_or_choice():
    """What a stored mask must cover before fine-tuning (collate pads a batch to its longest)."""
    import datasets

    from sparsebert_cli.data.padding import longest_input

    flat = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"input_ids": [[1, 2], [1, 2, 3, 4]]}),
        dev=datasets.Dataset.from_dict({"input_ids": [[1, 2, 3, 4, 5]]}),
    )
    assert longest_input(flat) == 5
    choices = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"input_ids": [[[1], [1, 2, 3]], [[1, 2], [1]]]})
    )
    assert longest_input(choices) == 3
    kept = flat["dev"].filter(lambda e: len(e["input_ids"]) < 5)  # no row left: nothing counts
    assert longest_input({"dev": kept, "train": flat["train"].select([0])}) == 2
