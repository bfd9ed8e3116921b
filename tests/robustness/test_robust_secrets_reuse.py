"""Secrets through interpolation, bad interpolations, and reuse decided by content.

Recorded commands keep `${...}` as typed; resolved secret values never reach a written config;
a secret cannot become a folder or W&B name; a bad interpolation is one `error:` line. `latest`
is resolved (and printed) before the job is hashed, and local data files enter the hash.
"""

import os
import time

import pytest
from conftest import sparsebert
from omegaconf import OmegaConf
from robust_helpers import TINY, assert_clean_error

from sparsebert_cli import runs
from sparsebert_cli.launch import hashed_config
from sparsebert_cli.stages.inputs import resolve_references

SECRET = "s3cr3t-value-91ab7c"


def test_a_bad_interpolation_is_one_error_line(workdir):
    proc = sparsebert("pretrain", *TINY, "mask.lam=${oc.env:HOME}", cwd=workdir, check=False)
    out = assert_clean_error(proc, "error:", "mask.lam")
    assert out.count("error:") == 1 and len(proc.stderr.strip().splitlines()) == 1, out


@pytest.mark.parametrize(
    "override",
    [
        "logger.project=${oc.env:WANDB_API_KEY}",
        "logger.group=x-${oc.env:MY_SECRET}",
        "+logger.tags=[${oc.env:HF_TOKEN}]",
    ],
)
def test_a_secret_cannot_become_a_name(workdir, override):
    env = {"WANDB_API_KEY": SECRET, "MY_SECRET": SECRET, "HF_TOKEN": SECRET}
    proc = sparsebert("pretrain", *TINY, override, cwd=workdir, check=False, env=env)
    out = assert_clean_error(proc, "a secret from the environment")
    assert SECRET not in out
    assert all(SECRET.encode() not in p.read_bytes() for p in workdir.rglob("*") if p.is_file())


@pytest.mark.parametrize("override", ["run_id=abcdefgh", "logger.project=x-abcdefgh"])
def test_validate_refuses_a_secret_name_as_the_run_does(workdir, monkeypatch, capsys, override):
    """`validate` checks a job's names as the launched job does (launch.prepare), a secret's
    value typed out included."""
    from sparsebert_cli.tools import validate_main

    monkeypatch.setenv("MY_SECRET", "abcdefgh")
    assert validate_main(["pretrain", *TINY, override]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "a secret from the environment" in err, err
    assert not (workdir / "runs").exists()


def test_secret_values_are_redacted_from_written_configs_and_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVICE_PASSWORD", SECRET)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # not a secret: not redacted
    command = runs.command_line("pretrain", ["data.text_column=${oc.env:SERVICE_PASSWORD}"])
    resolved = {"data": {"text_column": SECRET, "files": [f"/x/{SECRET}.txt"]}, "flag": "false"}
    runs.Run.start(tmp_path, "pretrain", resolved, "h", command)
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert SECRET.encode() not in written
    assert b"<redacted>" in written and b"false" in written
    assert "${oc.env:SERVICE_PASSWORD}" in runs.load_manifest(tmp_path)["command"]


def _completed(run_dir, stage: str, finished: float) -> None:
    (run_dir / "artifacts" / "model").mkdir(parents=True)
    runs.atomic_write_json(
        run_dir / runs.MANIFEST,
        {"stage": stage, "status": "completed", "config_hash": "x", "finished_at": finished},
    )


def _cfg(tmp_path, **overrides):
    from hydra import compose, initialize_config_dir

    from sparsebert_cli.cli import register_hydra_extensions
    from sparsebert_cli.config import conf_dir

    register_hydra_extensions()
    args = [f"paths.runs_dir={tmp_path}", *(f"{k}={v}" for k, v in overrides.items())]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name=overrides.pop("stage", "finetune"), overrides=args)
    return cfg


def test_latest_is_resolved_before_the_hash_so_a_newer_run_is_a_new_job(tmp_path):
    _completed(tmp_path / "pretrain" / "a", "pretrain", finished=1.0)
    cfg = _cfg(tmp_path, **{"model.from_run": "latest"})
    said = resolve_references(cfg)
    assert cfg.model.from_run == str((tmp_path / "pretrain" / "a").resolve())
    assert said == [f"model.from=latest → {(tmp_path / 'pretrain' / 'a').resolve()}"]
    first = runs.config_hash(hashed_config(OmegaConf.to_container(cfg, resolve=True)))
    _completed(tmp_path / "pretrain" / "b", "pretrain", finished=2.0)
    cfg = _cfg(tmp_path, **{"model.from_run": "latest"})
    resolve_references(cfg)
    second = runs.config_hash(hashed_config(OmegaConf.to_container(cfg, resolve=True)))
    assert cfg.model.from_run.endswith("b") and first != second


def test_an_edited_data_file_changes_the_job_hash(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("One sentence. Another one.\n")
    cfg = _cfg(tmp_path, data="text_files", **{"data.files": f"[{corpus}]"})
    before = runs.config_hash(hashed_config(OmegaConf.to_container(cfg, resolve=True)))
    corpus.write_text("One sentence. Another one, edited.\n")
    os.utime(corpus, ns=(time.time_ns(), time.time_ns() + 10**9))
    after = runs.config_hash(hashed_config(OmegaConf.to_container(cfg, resolve=True)))
    assert before != after


def test_an_edited_task_file_changes_the_job_hash(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("sentence,label\nok,1\n")
    cfg = _cfg(tmp_path, **{"+task.data_files.train": str(train)})
    before = runs.config_hash(hashed_config(OmegaConf.to_container(cfg, resolve=True)))
    train.write_text("sentence,label\nok,1\nbad,0\n")
    after = runs.config_hash(hashed_config(OmegaConf.to_container(cfg, resolve=True)))
    assert before != after


def test_configs_without_local_files_keep_their_hash(tmp_path):
    cfg = _cfg(tmp_path)
    assert "input_files" not in hashed_config(OmegaConf.to_container(cfg, resolve=True))
