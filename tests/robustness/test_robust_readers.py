"""Damaged run files: one validated reader per kind; `ls`, `report` and `latest` mark a damaged run
and go on with the others."""

import json

import pytest
import torch

from sparsebert_cli import cli, runs, tools
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.artifact import load_mask, save_mask
from sparsebert_cli.reporting.records import collect_runs

GOOD = {
    "stage": "pretrain",
    "status": "completed",
    "config_hash": "h",
    "command": "sparsebert pretrain",
    "inputs": {},
    "outputs": {},
    "attempts": 1,
    "started_at": 1.0,
    "finished_at": 2.0,
}
DAMAGE = {
    "finished_at as text": {**GOOD, "finished_at": "yesterday"},
    "stage as a list": {**GOOD, "stage": ["pretrain"]},
    "inputs as text": {**GOOD, "inputs": "runs/search/x"},
    "an input without run_dir": {**GOOD, "inputs": {"mask": {"run_dir": 3}}},
    "attempts as text": {**GOOD, "attempts": "2"},
    "attempts as a bool": {**GOOD, "attempts": True},
    "an unknown status": {**GOOD, "status": "done"},
    "outputs of numbers": {**GOOD, "outputs": {"a": 1}},
}
DEEP = "[" * 100_000 + "]" * 100_000


def write_runs(root):
    """One good completed pretrain run (the newest), then one damaged run per kind of damage."""
    for i, manifest in enumerate(DAMAGE.values()):
        folder = root / "pretrain" / f"bad-{i}"
        folder.mkdir(parents=True)
        (folder / runs.MANIFEST).write_text(json.dumps(manifest))
    for name, text in [("deep", DEEP), ("truncated", '{"stage": "pre'), ("array", "[1, 2]")]:
        folder = root / "pretrain" / f"bad-{name}"
        folder.mkdir(parents=True)
        (folder / runs.MANIFEST).write_text(text)
    good = root / "pretrain" / "good"
    good.mkdir(parents=True)
    (good / runs.MANIFEST).write_text(json.dumps({**GOOD, "finished_at": 5.0}))
    return good


@pytest.mark.parametrize("manifest", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_manifest_is_refused_with_the_bad_field(tmp_path, manifest):
    (tmp_path / runs.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SparseBertError, match="is damaged: its field"):
        runs.load_manifest(tmp_path)


def test_a_deeply_nested_file_is_refused_not_a_recursion_error(tmp_path):
    (tmp_path / runs.MANIFEST).write_text(DEEP)
    with pytest.raises(SparseBertError, match="nested too deeply"):
        runs.load_manifest(tmp_path)


def test_latest_skips_damaged_runs(tmp_path):
    good = write_runs(tmp_path)
    assert runs.resolve("pretrain", "latest", tmp_path) == good.resolve()


def test_ls_marks_damaged_runs_and_lists_the_rest(tmp_path, capsys):
    good = write_runs(tmp_path)
    (good / runs.METRICS).write_text(json.dumps({"eval/headline": {"nested": 1}}))
    assert tools.ls_main(["--runs-dir", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(DAMAGE) + 4
    assert all(row["status"] == runs.DAMAGED for row in rows)  # the good one's metrics are bad
    assert tools.ls_main(["--runs-dir", str(tmp_path)]) == 0  # the table renders too
    assert cli.main(["ls", "--show", str(tmp_path / "pretrain" / "bad-0")]) == 1
    assert "error:" in capsys.readouterr().err


def test_report_warns_about_damaged_runs_and_goes_on(tmp_path):
    write_runs(tmp_path)
    finetune = tmp_path / "finetune" / "f"
    finetune.mkdir(parents=True)
    (finetune / runs.CONFIG).write_text(json.dumps({"stage": "finetune", "seed": 0}))
    (finetune / runs.MANIFEST).write_text(json.dumps({**GOOD, "stage": "finetune"}))
    (finetune / runs.METRICS).write_text(json.dumps({"eval/headline": 0.5}))
    records, warnings = collect_runs([tmp_path])
    assert [r.dir for r in records] == [finetune.resolve()]
    assert sum("skipped" in w for w in warnings) == len(DAMAGE) + 3


@pytest.mark.parametrize(
    "meta",
    [DEEP, '{"kind": "window"', '{"kind": "window", "n": 4, "layers": 1, "heads": 1}', "[]"],
)
def test_a_damaged_mask_json_is_refused_with_a_message(tmp_path, meta):
    import torch

    save_mask(tmp_path, torch.ones(1, 1, 4, 4, dtype=torch.bool), {"kind": "window"})
    (tmp_path / "mask.json").write_text(meta)
    with pytest.raises(SparseBertError, match="mask.json"):
        load_mask(tmp_path)


def test_a_mask_json_with_params_of_the_wrong_shape_is_refused(tmp_path):
    import torch

    save_mask(tmp_path, torch.ones(1, 1, 4, 4, dtype=torch.bool), {"kind": "window"})
    meta = json.loads((tmp_path / "mask.json").read_text())
    (tmp_path / "mask.json").write_text(json.dumps({**meta, "params": [1]}))
    with pytest.raises(SparseBertError, match="params"):
        load_mask(tmp_path)


@pytest.mark.parametrize(
    "record",
    [DEEP, "{", "[]", "{}", '{"head": "pretraining"}', '{"head": "x"}',
     '{"head": "sequence_classification", "task": "mrpc"}'],
)  # fmt: skip
def test_a_damaged_sparsebert_json_is_refused_with_a_message(tmp_path, record):
    from sparsebert_cli.pretrained import CHECKPOINT_FILE, read_record

    (tmp_path / CHECKPOINT_FILE).write_text(record)
    with pytest.raises(SparseBertError, match="sparsebert.json cannot be read"):
        read_record(tmp_path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("tokenizer.json", '{"version": "1.0", "model": {"type": "WordPie'),
     ("tokenizer.json", "{}"), ("vocab.txt", ""), ("tokenizer.json", DEEP)],
)  # fmt: skip
def test_a_damaged_tokenizer_is_refused_with_a_message(tmp_path, name, content):
    from sparsebert_cli.data.tokenizer import tokenizer_from_folder

    (tmp_path / name).write_text(content)
    if name == "vocab.txt":  # what makes a vocab.txt readable (alone it is refused as such)
        (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    with pytest.raises(SparseBertError, match="tokenizer in"):
        tokenizer_from_folder(tmp_path)


@pytest.mark.parametrize("damaged", ["mask.json", "config.json"])
def test_validate_refuses_a_deeply_nested_model_file_in_one_line(tmp_path, capsys, damaged):
    """`validate finetune mask=checkpoint` of a model folder whose mask.json (read to compare its
    n with task.seq_len) or config.json is nested 100,000 deep ended in a RecursionError."""
    from safetensors.torch import save_file

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"unread": torch.zeros(1)}, model / runs.WEIGHTS_FILE)  # validate reads no weights
    save_mask(model, torch.ones(1, 2, 8, 8, dtype=torch.bool), {"kind": "dense"})
    (model / damaged).write_text(DEEP)
    code = tools.validate_main(["finetune", f"model.name_or_path={model}", "mask=checkpoint"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and str(model / damaged) in err, err
