"""Path fields expand `~` and environment variables (config files, quoted overrides)."""

import pytest
from conftest import cli_env, compose_cfg, sparsebert

from sparsebert_cli.config import expand_path, expand_path_fields


def test_home_and_variables_are_expanded(monkeypatch):
    monkeypatch.setenv("HOME", "/home/ada")
    monkeypatch.setenv("GLUE", "/data/glue")
    assert expand_path("~/glue_data") == "/home/ada/glue_data"
    assert expand_path("$GLUE/MRPC") == "/data/glue/MRPC"
    assert expand_path("${GLUE}/MRPC") == "/data/glue/MRPC"
    assert expand_path("bert-base-uncased") == "bert-base-uncased"


@pytest.mark.parametrize("key", ["model.name_or_path", "data.tokenizer"])
def test_a_missing_folder_typed_with_its_dot_is_no_hub_name(tmp_path, monkeypatch, key):
    """`model.name_or_path=./bert-base-uncasedd` (a typo) became the hub name
    `bert-base-uncasedd` once normalised: offline, "cannot get the model from the hub"."""
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.validation import check_command_line

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SparseBertError, match=rf"{key}=./bert-base-uncasedd: the folder does not"):
        check_command_line("pretrain", [f"{key}=./bert-base-uncasedd"])
    (tmp_path / "bert").mkdir()
    check_command_line("pretrain", [f"{key}=./bert"])
    # one file, one content hash: the composed value is normalised as before
    assert expand_path("./a.txt") == "a.txt"


def test_an_empty_path_stays_empty_and_so_unset():
    """`model.from=` became "." (the launch folder): ". is not a sparsebert run folder"."""
    cfg = compose_cfg("finetune", "model.from_run=")
    expand_path_fields(cfg)
    assert cfg.model.from_run == "" and expand_path("") == ""


def test_every_path_field_of_a_composed_config_is_expanded(monkeypatch):
    monkeypatch.setenv("HOME", "/home/ada")
    monkeypatch.setenv("CORPUS", "/data/text")
    cfg = compose_cfg(
        "finetune",
        'task.glue_dir="~/glue_data"',
        'task.data_dir="$CORPUS/squad"',
        '+task.data_files={train: "~/t.csv", dev: "$CORPUS/d.csv"}',
        'data.files=["$CORPUS/*.txt", "~/more.txt"]',
        'model.name_or_path="~/models/bert"',
        'paths.runs_dir="~/runs"',
        'paths.cache_dir="$CORPUS/cache"',
        'model.from="$CORPUS/runs/pretrain/p"',
        'data.tokenizer="~/tok"',
    )
    expand_path_fields(cfg)
    # run folders too (they were left as written: "$R is not a sparsebert run folder")
    assert (cfg.model.from_run, cfg.data.tokenizer) == (
        "/data/text/runs/pretrain/p",
        "/home/ada/tok",
    )
    assert cfg.task.glue_dir == "/home/ada/glue_data"
    assert cfg.task.data_dir == "/data/text/squad"
    assert dict(cfg.task.data_files) == {"train": "/home/ada/t.csv", "dev": "/data/text/d.csv"}
    assert list(cfg.data.files) == ["/data/text/*.txt", "/home/ada/more.txt"]
    assert cfg.model.name_or_path == "/home/ada/models/bert"
    assert (cfg.paths.runs_dir, cfg.paths.cache_dir) == ("/home/ada/runs", "/data/text/cache")


def test_a_quoted_tilde_runs_dir_puts_the_run_folder_under_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**cli_env(tmp_path), "HOME": str(home)}
    del env["SPARSEBERT_RUNS_DIR"]
    # A run refused once started (a corpus of one document: none to hold out) leaves its
    # failed folder, enough to see where the run went.
    sparsebert(
        "pretrain",
        'paths.runs_dir="~/runs"',
        "debug=smoke",
        "data.max_documents=1",
        cwd=tmp_path,
        check=False,
        env=env,
    )
    assert list((home / "runs" / "pretrain").glob("*/manifest.json"))
    assert not (tmp_path / "~").exists()
