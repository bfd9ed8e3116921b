"""BERT pre-training examples: packing, next-sentence labels, MLM masking, determinism, caching."""

import random

import pytest
from conftest import compose_cfg, data_config
from omegaconf import OmegaConf

from sparsebert_cli.data import pretraining
from sparsebert_cli.data.pretraining import (
    build_pretraining_splits,
    collate_pretraining,
    segment_pairs,
    truncate_pair,
)
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.validation import validate_config

WORDS = ["apple", "river", "stone", "cloud", "forest", "silver", "window", "garden"]


@pytest.fixture(scope="module")
def wiki_examples(tokenizer, tmp_path_factory):
    """The embedded corpus at seq_len 128: a few thousand examples, a large sample for rates."""
    return build_pretraining_splits(
        data_config(name="wiki_sample"), tokenizer, 0, tmp_path_factory.mktemp("cache")
    )


@pytest.fixture
def word_documents(tmp_path):
    """Eight documents; document d repeats only the word WORDS[d], 30 sentences of 4 words."""
    documents = [
        " ".join(f"{word.capitalize()} {word} {word} {word}." for _ in range(30)) for word in WORDS
    ]
    (tmp_path / "words.txt").write_text("\n\n".join(documents) + "\n")
    return data_config(
        name="text_files",
        files=[str(tmp_path / "words.txt")],
        tokenizer="embedded",
        seq_len=32,
        eval_fraction=0.25,
    )


def test_examples_are_cls_a_sep_b_sep_with_segment_ids(wiki_examples, tokenizer):
    for example in wiki_examples["train"].select(range(200)):
        ids, types = example["input_ids"], example["token_type_ids"]
        separators = [i for i, token in enumerate(ids) if token == tokenizer.sep_token_id]
        assert (
            ids[0] == tokenizer.cls_token_id
            and len(separators) == 2
            and separators[1] == len(ids) - 1
        )
        assert types == [0] * (separators[0] + 1) + [1] * (len(ids) - separators[0] - 1)
        assert example["attention_mask"] == [1] * len(ids)


def test_no_example_exceeds_seq_len(wiki_examples):
    assert max(len(ids) for ids in wiki_examples["train"]["input_ids"]) == 128


def test_each_example_masks_fifteen_percent_of_its_tokens_up_to_the_cap(wiki_examples):
    for example in wiki_examples["train"].select(range(500)):
        expected = min(20, max(1, round(len(example["input_ids"]) * 0.15)))
        assert sum(example["masked_lm_weights"]) == expected


def test_masked_tokens_are_80_percent_mask_10_random_10_unchanged(wiki_examples, tokenizer):
    outcomes = {"mask": 0, "unchanged": 0, "random": 0}
    for example in wiki_examples["train"]:
        for position, original, weight in zip(
            example["masked_lm_positions"],
            example["masked_lm_ids"],
            example["masked_lm_weights"],
            strict=True,
        ):
            if weight:
                token = example["input_ids"][position]
                kind = (
                    "mask"
                    if token == tokenizer.mask_token_id
                    else "unchanged"
                    if token == original
                    else "random"
                )
                outcomes[kind] += 1
    total = sum(outcomes.values())
    assert total > 50_000
    assert outcomes["mask"] / total == pytest.approx(0.8, abs=0.01)
    assert outcomes["unchanged"] / total == pytest.approx(0.1, abs=0.01)
    assert outcomes["random"] / total == pytest.approx(0.1, abs=0.01)


def test_cls_sep_and_padding_are_never_masked(wiki_examples, tokenizer):
    specials = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    for example in wiki_examples["train"]:
        weights = example["masked_lm_weights"]
        real = [p for p, w in zip(example["masked_lm_positions"], weights, strict=True) if w]
        assert all(0 < p < len(example["input_ids"]) for p in real)
        assert not {example["masked_lm_ids"][i] for i, w in enumerate(weights) if w} & specials
        padding = [i for i, w in enumerate(weights) if not w]
        assert all(
            example["masked_lm_positions"][i] == 0 and example["masked_lm_ids"][i] == 0
            for i in padding
        )


def test_about_half_the_second_segments_are_random(wiki_examples):
    labels = wiki_examples["train"]["next_sentence_label"]
    assert sum(labels) / len(labels) == pytest.approx(0.5, abs=0.04)


def test_a_real_next_segment_continues_segment_a():
    # Sentence i is [i, i, i]: a real B starts with the sentence after A's last one.
    documents = [
        {"sentences": [[i] * 3 for i in range(40)]},
        {"sentences": [[100 + i] * 3 for i in range(40)]},
    ]
    settings = {"seq_len": 20, "nsp": True, "short_seq_prob": 0.0}
    pairs = list(segment_pairs(documents[0]["sentences"], 0, documents, settings, random.Random(1)))
    real = [(a, b) for a, b, label in pairs if label == 0]
    random_next = [(a, b) for a, b, label in pairs if label == 1]
    assert real and random_next
    assert all(b[0] == a[-1] + 1 for a, b in real)
    assert all(b[0] >= 100 for _, b in random_next)


def test_a_long_pair_is_trimmed_from_the_longer_segment():
    a, b = list(range(100)), list(range(1000, 1010))
    truncate_pair(a, b, 50, random.Random(0))
    assert (len(a), b) == (40, list(range(1000, 1010)))
    assert a == list(range(a[0], a[0] + 40))


def test_eval_examples_come_only_from_held_out_documents(word_documents, tokenizer, tmp_path):
    splits = build_pretraining_splits(word_documents, tokenizer, 0, tmp_path / "cache")
    word_ids = {tokenizer.convert_tokens_to_ids(word) for word in WORDS}

    def words_in(split):
        return {
            t
            for e in splits[split]
            for t in (*e["input_ids"], *e["masked_lm_ids"])
            if t in word_ids
        }

    assert len(words_in("eval")) == 2 and len(words_in("train")) == 6
    assert words_in("eval").isdisjoint(words_in("train"))


def test_the_same_seed_gives_the_same_examples(word_documents, tokenizer, tmp_path):
    first = build_pretraining_splits(word_documents, tokenizer, 5, tmp_path / "one")
    second = build_pretraining_splits(word_documents, tokenizer, 5, tmp_path / "two")
    assert first["train"][:] == second["train"][:] and first["eval"][:] == second["eval"][:]


def test_another_seed_gives_other_train_examples_and_the_same_eval(
    word_documents, tokenizer, tmp_path
):
    first = build_pretraining_splits(word_documents, tokenizer, 5, tmp_path / "cache")
    second = build_pretraining_splits(word_documents, tokenizer, 6, tmp_path / "cache")
    assert first["train"]["input_ids"] != second["train"]["input_ids"]
    assert first["eval"][:] == second["eval"][:]


def test_the_first_eval_examples_span_the_held_out_documents(word_documents, tokenizer, tmp_path):
    """The attention gate reads the first 256 eval examples and occlusion the first 512; in
    document order they came from one or two of the held-out documents."""
    documents = [" ".join(f"{w.capitalize()} {w} {w} {w}." for _ in range(200)) for w in WORDS]
    (tmp_path / "long.txt").write_text("\n\n".join(documents) + "\n")
    data = OmegaConf.merge(word_documents, {"files": [str(tmp_path / "long.txt")]})
    splits = build_pretraining_splits(data, tokenizer, 0, tmp_path / "cache")
    word_ids = {tokenizer.convert_tokens_to_ids(word) for word in WORDS}

    def document(example) -> int:  # the word of its segment A
        ids, kinds = example["input_ids"], example["token_type_ids"]
        return next(t for t, kind in zip(ids, kinds, strict=True) if kind == 0 and t in word_ids)

    order = [document(example) for example in splits["eval"]]
    assert len(order) >= 40 and len(set(order)) == 2
    assert len(set(order[: len(order) // 4])) == 2


def test_no_seed_trains_on_another_seeds_held_out_documents(word_documents, tokenizer, tmp_path):
    # A continuation (model.from=) with another seed must not evaluate on what its checkpoint
    # trained on: the held-out documents do not depend on the run's seed.
    word_ids = {tokenizer.convert_tokens_to_ids(word) for word in WORDS}
    held_out, trained = set(), set()
    for seed in range(6):
        splits = build_pretraining_splits(word_documents, tokenizer, seed, tmp_path / "cache")
        for split, words in (("eval", held_out), ("train", trained)):
            words |= {t for e in splits[split] for t in e["input_ids"] if t in word_ids}
    assert len(held_out) == 2 and held_out.isdisjoint(trained)


def test_examples_do_not_depend_on_num_proc(word_documents, tokenizer, tmp_path):
    serial = build_pretraining_splits(word_documents, tokenizer, 0, tmp_path / "serial")
    parallel = build_pretraining_splits(
        OmegaConf.merge(word_documents, {"num_proc": 2}), tokenizer, 0, tmp_path / "parallel"
    )
    assert serial["train"][:] == parallel["train"][:]


def test_a_rerun_loads_the_examples_from_the_cache(
    word_documents, tokenizer, tmp_path, monkeypatch
):
    first = build_pretraining_splits(word_documents, tokenizer, 0, tmp_path / "cache")
    monkeypatch.setattr(
        pretraining, "load_corpus", lambda *_: pytest.fail("rebuilt cached examples")
    )
    assert (
        build_pretraining_splits(word_documents, tokenizer, 0, tmp_path / "cache")["train"][:]
        == first["train"][:]
    )


def test_another_seq_len_builds_another_cache_entry(word_documents, tokenizer, tmp_path):
    build_pretraining_splits(word_documents, tokenizer, 0, tmp_path / "cache")
    longer = build_pretraining_splits(
        OmegaConf.merge(word_documents, {"seq_len": 48}), tokenizer, 0, tmp_path / "cache"
    )
    assert max(len(ids) for ids in longer["train"]["input_ids"]) == 48
    assert len([p for p in (tmp_path / "cache" / "pretraining").iterdir() if p.is_dir()]) == 2


def test_without_nsp_examples_are_single_segments(word_documents, tokenizer, tmp_path):
    splits = build_pretraining_splits(
        OmegaConf.merge(word_documents, {"nsp": False}), tokenizer, 0, tmp_path / "cache"
    )
    example = splits["train"][0]
    assert (
        example["input_ids"].count(tokenizer.sep_token_id) == 1
        and example["input_ids"][-1] == tokenizer.sep_token_id
    )
    assert set(splits["train"]["next_sentence_label"]) == {-100}
    assert set(example["token_type_ids"]) == {0}


def test_collate_pads_sequences_to_the_longest_in_the_batch(word_documents, tokenizer, tmp_path):
    train = build_pretraining_splits(word_documents, tokenizer, 0, tmp_path / "cache")["train"]
    short = min(range(len(train)), key=lambda i: len(train[i]["input_ids"]))
    long = max(range(len(train)), key=lambda i: len(train[i]["input_ids"]))
    batch = collate_pretraining([train[short], train[long]])
    length = len(train[short]["input_ids"])
    assert batch["input_ids"].shape == (2, len(train[long]["input_ids"]))
    assert (
        batch["attention_mask"][0].sum().item() == length
        and batch["input_ids"][0, length:].eq(0).all()
    )
    assert batch["masked_lm_weights"].shape == (2, 20) and batch["next_sentence_label"].shape == (
        2,
    )


@pytest.mark.parametrize(
    ("field", "value"), [("mlm_probability", 1.5), ("seq_len", 4), ("eval_fraction", 0.0)]
)
def test_invalid_settings_are_refused_at_the_boundary(field, value):
    """Ranges are checked once, by validation (config.RANGES), before any data is prepared."""
    cfg = compose_cfg("pretrain", f"data.{field}={value}")
    with pytest.raises(SparseBertError, match=f"data.{field}={value}"):
        validate_config(cfg)


def test_a_one_document_corpus_is_refused(tmp_path, tokenizer):
    (tmp_path / "one.txt").write_text("Only one document. It has two sentences.\n")
    config = data_config(name="text_files", files=[str(tmp_path / "one.txt")])
    with pytest.raises(SparseBertError, match="has 1 document"):
        build_pretraining_splits(config, tokenizer, 0, tmp_path / "cache")
