"""Property-based fuzzing (hypothesis) of the config schema and of the run-file readers.

Every case ends in success or in one `error:` message (exit 1), never a traceback, and nothing
outside the runs folder changes. The default run draws a few dozen examples per property (a few
seconds); the `slow` tests draw many more (or set HYPOTHESIS_PROFILE=sparsebert-long). Under CI
the draws are derandomized.
"""

import dataclasses
import json
import os
import string
import types
import typing

import pytest
from conftest import sparsebert
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from robust_helpers import TINY

from sparsebert_cli import cli, runs, tools
from sparsebert_cli.config import STAGES, RunConfig
from sparsebert_cli.data.tokenizer import tokenizer_from_folder
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.artifact import load_mask
from sparsebert_cli.pretrained import CHECKPOINT_FILE, read_record

settings.register_profile(
    "sparsebert-fast",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("sparsebert-long", parent=settings.get_profile("sparsebert-fast"),
                          max_examples=600)  # fmt: skip
# CI draws the same examples on every run (a failure there reproduces; new cases are found by the
# random draws of local runs, and the long profile).
settings.register_profile("sparsebert-ci", parent=settings.get_profile("sparsebert-fast"),
                          derandomize=True)  # fmt: skip
DEFAULT_PROFILE = "sparsebert-ci" if os.environ.get("CI") else "sparsebert-fast"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", DEFAULT_PROFILE))
# The slow properties: 600 random draws locally; CI's fixed (derandomized) draws stop at 200, which
# keeps the suite's time in bounds (new cases come from local runs; pin them with @example).
LONG = settings(max_examples=200 if os.environ.get("CI") else 600)


def schema_keys(cls=RunConfig, prefix: str = "") -> dict[str, type]:
    """Every leaf key of the schema with its type (Optional unwrapped)."""
    found = {}
    for f in dataclasses.fields(cls):
        kind = f.type
        if dataclasses.is_dataclass(kind):
            found.update(schema_keys(kind, f"{prefix}{f.name}."))
            continue
        if isinstance(kind, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        found[prefix + f.name] = kind
    return found


KEYS = schema_keys()
NUMERIC = sorted(k for k, t in KEYS.items() if t in (int, float))
TEXT = sorted(k for k, t in KEYS.items() if t is str and k not in ("stage",))
EDGE_NUMBERS = ["0", "-1", "1", "2", "1e308", "-1e308", str(2**64), str(-(2**63) - 1),
                "nan", "inf", "-inf", "0.5", "1.5", "-0.0", "10**9"]  # fmt: skip
PATHLIKE = ["", ".", "..", "../../x", "/", "/etc/passwd", "a/b", "~", "~root/x", "x" * 300,
            "é", "日本語", "a\tb", "${oc.env:HOME}", "${now:%Y}", "'quoted'", "[1,2]", "null",
            "{a: 1}", "C:\\x", "\u202e", "nul\u00a0x"]  # fmt: skip
TEXT_VALUES = st.one_of(
    st.sampled_from(PATHLIKE),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
)


def quoted(value: str) -> str:
    """A Hydra override value that is the string itself (quoted, with quotes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_validate(args: list[str], capsys) -> None:
    code = tools.validate_main(args)
    out, err = capsys.readouterr()
    assert code in (0, 1), (args, code, out, err)
    assert "Traceback" not in out + err
    if code == 1:
        assert err.startswith("error:") and err.count("error:") == 1, (args, err)
    else:
        assert "config OK" in out, (args, out)


@given(stage=st.sampled_from(STAGES), key=st.sampled_from(NUMERIC),
       value=st.sampled_from(EDGE_NUMBERS))  # fmt: skip
def test_numeric_keys_at_their_edges_validate_or_fail_with_one_error(stage, key, value, capsys):
    check_validate([stage, f"{key}={value}"], capsys)


@given(stage=st.sampled_from(STAGES), key=st.sampled_from(TEXT), value=TEXT_VALUES)
def test_text_keys_with_path_like_and_unicode_values_validate_or_fail_cleanly(
    stage, key, value, capsys
):
    check_validate([stage, f"{key}={quoted(value)}"], capsys)


@given(raw=st.text(alphabet=string.printable, max_size=30))
def test_raw_override_text_never_escapes_as_a_traceback(raw, capsys):
    check_validate(["pretrain", raw], capsys)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20,
)  # fmt: skip
FIELDS = st.fixed_dictionaries(
    {},
    optional={name: JSON for name in runs.MANIFEST_FIELDS}
    | {"stage": st.sampled_from(STAGES), "status": st.sampled_from(runs.STATUSES)},
)


def check_readers(tmp_path, manifest, metrics, capsys) -> None:
    run_dir = tmp_path / "runs" / "pretrain" / "r"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runs.MANIFEST).write_text(json.dumps(manifest))
    (run_dir / runs.METRICS).write_text(json.dumps(metrics))
    for read in (runs.load_manifest, runs.read_metrics):
        try:
            read(run_dir)
        except SparseBertError:
            pass
    try:
        runs.resolve("pretrain", "latest", tmp_path / "runs")
    except SparseBertError as e:
        assert "no completed 'pretrain' run" in str(e)
    assert tools.ls_main(["--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    assert tools.ls_main(["--runs-dir", str(tmp_path / "runs")]) == 0
    assert cli.main(["ls", "--show", str(run_dir)]) in (0, 1)
    capsys.readouterr()


@given(manifest=st.one_of(FIELDS, JSON), metrics=JSON)
def test_run_file_readers_accept_or_refuse_any_json(tmp_path, manifest, metrics, capsys):
    check_readers(tmp_path, manifest, metrics, capsys)


@given(meta=st.one_of(JSON, st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["window", "dam_u", "x"]) | JSON, "n": JSON, "layers": JSON,
    "heads": JSON, "sha256": JSON, "params": JSON})))  # fmt: skip
def test_the_mask_reader_accepts_or_refuses_any_json(tmp_path, meta):
    (tmp_path / "mask.safetensors").write_bytes(b"")
    (tmp_path / "mask.json").write_text(json.dumps(meta))
    with pytest.raises(SparseBertError):
        load_mask(tmp_path)  # no real tensor: every case must be refused with a message


@given(record=st.one_of(JSON, st.fixed_dictionaries({}, optional={
    "head": st.sampled_from(["pretraining", "sequence_classification", "x"]) | JSON,
    "nsp": JSON, "task": JSON, "model": JSON, "num_labels": JSON})))  # fmt: skip
def test_the_checkpoint_record_reader_accepts_or_refuses_any_json(tmp_path, record):
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(record))
    try:
        read = read_record(tmp_path)
    except SparseBertError as e:
        assert CHECKPOINT_FILE in str(e)
    else:
        assert isinstance(read, dict) and isinstance(read.get("task", {}), dict)


@given(content=st.one_of(JSON.map(json.dumps), st.text(max_size=60)), name=st.sampled_from(
    ["tokenizer.json", "vocab.txt"]))  # fmt: skip
def test_the_tokenizer_reader_accepts_or_refuses_any_file(tmp_path, content, name):
    for stale in ("tokenizer.json", "vocab.txt"):
        (tmp_path / stale).unlink(missing_ok=True)
    (tmp_path / name).write_text(content)
    try:
        tokenizer_from_folder(tmp_path)
    except SparseBertError as e:
        assert str(tmp_path) in str(e)


def tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@settings(max_examples=6)
@given(key=st.sampled_from(runs.NAME_KEYS), value=TEXT_VALUES)
def test_the_real_cli_never_writes_outside_the_runs_folder(tmp_path_factory, key, value):
    workdir = tmp_path_factory.mktemp("cli")
    (workdir / "user.txt").write_text("mine")
    env = {"SPARSEBERT_RUNS_DIR": str(workdir / "runs")}
    proc = sparsebert("pretrain", *TINY, "trainer.max_steps=0", f"{key}={quoted(value)}",
                      cwd=workdir, check=False, env=env)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert out.count("error:") == 1, out
    assert {p for p in tree(workdir) if not p.startswith("runs")} == {"user.txt"}


@pytest.mark.slow
@LONG
@given(stage=st.sampled_from(STAGES), key=st.sampled_from(NUMERIC + TEXT),
       value=st.one_of(st.sampled_from(EDGE_NUMBERS), TEXT_VALUES))  # fmt: skip
@example(stage="search", key="model.from_run", value="x" * 300)  # found by CI: ENAMETOOLONG
@example(stage="evaluate", key="paths.runs_dir", value="x" * 300)  # found locally: ENAMETOOLONG
@example(stage="search", key="model.from_run", value="~0")  # found locally: pathlib's ~user
def test_long_fuzz_of_the_config_schema(stage, key, value, capsys):
    check_validate([stage, f"{key}={quoted(value) if value not in EDGE_NUMBERS else value}"],
                   capsys)  # fmt: skip


@pytest.mark.slow
@LONG
@given(manifest=st.one_of(FIELDS, JSON), metrics=JSON)
@example(manifest={"stage": "search", "inputs": None}, metrics=None)  # found by CI
@example(manifest={"stage": "search", "command": None}, metrics={})  # found locally: ls
def test_long_fuzz_of_the_run_file_readers(tmp_path, manifest, metrics, capsys):
    check_readers(tmp_path, manifest, metrics, capsys)
