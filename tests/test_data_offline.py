"""Offline mode: the variables that forbid the hub, and corpus errors that name the alternatives."""

import os
import subprocess
import sys

from sparsebert_cli.data.hub import OFFLINE_VARIABLES, set_offline_env


def test_set_offline_env_sets_the_three_hub_variables(monkeypatch):
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    set_offline_env()
    assert {name: os.environ[name] for name in OFFLINE_VARIABLES} == {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def test_offline_wikipedia_corpus_names_the_dataset_and_local_corpora(tmp_path):
    # set_offline_env runs before datasets is imported, as the stages do with offline=true.
    script = (
        "from sparsebert_cli.data.hub import set_offline_env\n"
        "set_offline_env()\n"
        "from pathlib import Path\n"
        "from omegaconf import OmegaConf\n"
        "from sparsebert_cli.data.config import DataConfig\n"
        "from sparsebert_cli.data.corpus import load_corpus\n"
        "from sparsebert_cli.errors import SparseBertError\n"
        "config = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load('conf/data/wikipedia.yaml'))\n"
        "try:\n"
        f"    load_corpus(config, Path({str(tmp_path)!r}))\n"
        "except SparseBertError as error:\n"
        "    print(error)\n"
    )
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    for name in OFFLINE_VARIABLES:
        environment.pop(name, None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        cwd=root,
        check=True,
    )
    assert "'wikimedia/wikipedia' (config '20231101.en')" in result.stdout
    assert "data=wiki_sample" in result.stdout and "data=text_files" in result.stdout
    assert "without offline=true and without HF_HUB_OFFLINE=1" in result.stdout
    assert "offline=true gives this answer at once" in result.stdout  # not after the retries


def test_a_hub_library_record_reaches_the_screen_once(capfd):
    import logging

    from sparsebert_cli.launch import quiet_libraries

    quiet_libraries()
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logging.getLogger().addHandler(handler)
    try:
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        logging.getLogger("datasets.load").warning("Retrying in 1s [Retry 1/5].")
    finally:
        logging.getLogger().removeHandler(handler)
    assert len(seen) == 2  # each record once, through the root logger
    assert "Retrying" not in capfd.readouterr().err  # not also by the libraries' own handlers
