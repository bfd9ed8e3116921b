"""Tokenizers: the embedded uncased WordPiece, one trained on the corpus (cached, saved as an
artifact and reloaded), and the offline error for a hub name."""

import os
import subprocess
import sys

import pytest
from conftest import data_config

from sparsebert_cli.data import tokenizer as tokenizer_module
from sparsebert_cli.data.tokenizer import load_tokenizer, save_tokenizer, tokenizer_from_folder
from sparsebert_cli.errors import SparseBertError

SENTENCES = "The quick brown fox jumps over the lazy dog. A lazy dog sleeps all day.\n"


@pytest.fixture
def text_files(tmp_path):
    (tmp_path / "corpus.txt").write_text(SENTENCES * 3 + "\n" + SENTENCES)
    return data_config(
        name="text_files", files=[str(tmp_path / "corpus.txt")], tokenizer="train", vocab_size=80
    )


def test_embedded_tokenizer_is_bert_base_uncased_wordpiece(tmp_path):
    tokenizer = load_tokenizer(data_config(tokenizer="embedded"), tmp_path)
    assert len(tokenizer) == 30522
    assert tokenizer("Hello World")["input_ids"] == [101, 7592, 2088, 102]


def test_trained_tokenizer_has_bert_special_tokens_and_the_vocabulary_size(text_files, tmp_path):
    tokenizer = load_tokenizer(text_files, tmp_path / "cache")
    assert len(tokenizer) == 80
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    encoded = tokenizer("The fox", "a DOG")
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == [
        "[CLS]",
        "the",
        "fox",
        "[SEP]",
        "a",
        "dog",
        "[SEP]",
    ]
    assert encoded["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


def test_a_vocabulary_smaller_than_the_corpus_alphabet_is_refused(text_files, tmp_path):
    """data.vocab_size=1 trained a larger vocabulary than asked, silently."""
    text_files.vocab_size = 1
    with pytest.raises(SparseBertError, match=r"data.vocab_size=1 is below the \d+ tokens"):
        load_tokenizer(text_files, tmp_path / "cache")


def test_trained_tokenizer_is_reused_from_the_cache(text_files, tmp_path, monkeypatch):
    first = load_tokenizer(text_files, tmp_path / "cache")
    monkeypatch.setattr(
        tokenizer_module, "train_wordpiece", lambda *_: pytest.fail("trained again")
    )
    assert load_tokenizer(text_files, tmp_path / "cache").get_vocab() == first.get_vocab()


def test_saved_tokenizer_reloads_from_its_folder_with_the_same_ids(text_files, tmp_path):
    tokenizer = load_tokenizer(text_files, tmp_path / "cache")
    folder = save_tokenizer(tokenizer, tmp_path / "run" / "artifacts" / "tokenizer")
    for reloaded in (
        tokenizer_from_folder(folder),
        load_tokenizer(data_config(tokenizer=str(folder)), tmp_path),
    ):
        assert (
            reloaded("lazy foxes sleep")["input_ids"] == tokenizer("lazy foxes sleep")["input_ids"]
        )


def test_a_folder_without_a_tokenizer_is_refused(tmp_path):
    with pytest.raises(SparseBertError, match="holds no tokenizer"):
        load_tokenizer(data_config(tokenizer=str(tmp_path)), tmp_path)


def test_a_vocab_txt_alone_is_refused_with_the_file_that_makes_it_readable(tmp_path):
    """Google's vocab.txt alone does not say whether to lower-case: the reader failed with
    "Couldn't instantiate the backend tokenizer" and the files were called corrupt."""
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\n")
    with pytest.raises(SparseBertError, match="holds a vocab.txt alone.*tokenizer_config.json"):
        tokenizer_from_folder(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "BertTokenizer", "do_lower_case": true}'  # the fix it names
    )
    assert tokenizer_from_folder(tmp_path)("The cat")["input_ids"] == [2, 5, 6, 3]


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_tokenizer_path_that_is_no_folder_is_refused_before_any_work(tmp_path, kind):
    """Such a path went to the hub ("Repo id must be in the form ..."); `validate` passed it."""
    from conftest import compose_cfg

    from sparsebert_cli.validation import check_local_inputs

    path = tmp_path / "tokenizer"
    if kind == "file":
        path.write_text("not a folder")
    expected = "is a file, not a folder" if kind == "file" else "does not exist"
    with pytest.raises(SparseBertError, match=f"data.tokenizer={path} {expected}"):
        load_tokenizer(data_config(tokenizer=str(path)), tmp_path)
    cfg = compose_cfg("pretrain", f"data.tokenizer={path}")
    with pytest.raises(SparseBertError, match=f"data.tokenizer={path} {expected}"):
        check_local_inputs(cfg, device_here=False)


def test_unreachable_hub_tokenizer_names_the_model_and_offline_choices(tmp_path):
    script = (
        "from pathlib import Path\n"
        "from omegaconf import OmegaConf\n"
        "from sparsebert_cli.data.config import DataConfig\n"
        "from sparsebert_cli.data.tokenizer import load_tokenizer\n"
        "from sparsebert_cli.errors import SparseBertError\n"
        "try:\n"
        "    load_tokenizer(OmegaConf.structured(DataConfig(tokenizer='bert-base-uncased')), Path('.'))\n"
        "except SparseBertError as error:\n"
        "    print(error)\n"
    )
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        check=True,
    )
    assert "tokenizer 'bert-base-uncased'" in result.stdout
    assert "data.tokenizer=embedded" in result.stdout and "data.tokenizer=train" in result.stdout


def test_the_tokenizer_saved_with_the_model_wins_over_data_tokenizer(text_files, tmp_path, caplog):
    trained = load_tokenizer(text_files, tmp_path / "cache")
    model_folder = save_tokenizer(trained, tmp_path / "model")
    caplog.set_level("INFO")
    tokenizer = load_tokenizer(data_config(tokenizer="embedded"), tmp_path, source=model_folder)
    assert len(tokenizer) == 80
    # data.tokenizer is not used here, and the log says so (it was silently ignored)
    assert f"tokenizer: the model folder's own, {model_folder}" in caplog.text
    assert "data.tokenizer=embedded is read only for a model folder without one" in caplog.text
    assert caplog.records[-1].levelname == "INFO"  # the default: nothing was asked for
    # another tokenizer asked for and not used is a warning (it was said at INFO only)
    load_tokenizer(data_config(tokenizer="bert-base-uncased"), tmp_path, source=model_folder)
    assert caplog.records[-1].levelname == "WARNING"
    assert "data.tokenizer=bert-base-uncased is read only" in caplog.records[-1].getMessage()


def test_a_model_folder_without_tokenizer_leaves_data_tokenizer_in_charge(tmp_path):
    tokenizer = load_tokenizer(data_config(tokenizer="embedded"), tmp_path, source=tmp_path)
    assert len(tokenizer) == 30522


def test_a_model_folder_without_a_tokenizer_says_which_one_is_used(tmp_path, caplog):
    """A weights-only folder silently got data.tokenizer's vocabulary."""
    caplog.set_level("WARNING")
    tokenizer = load_tokenizer(data_config(tokenizer="embedded"), tmp_path / "c", source=tmp_path)
    assert len(tokenizer) == 30522
    assert f"the model folder {tmp_path} holds no tokenizer" in caplog.text
    assert "using data.tokenizer=embedded" in caplog.text
