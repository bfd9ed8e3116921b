"""Every `sparsebert` example in the README's ```bash blocks runs offline with `debug=smoke`.

The README may promise only what the tool does. The examples run in order in one launch folder
(so `latest` finds the run an earlier example made), in one Python process (the imports are paid
once), after the blocks' other shell lines (a heredoc that writes example data); HOME points at a
folder with small copies of the data an example may name: ~/glue_data (MRPC in the GLUE download
layout), ~/squad (SQuAD v1.1 and v2.0) and ~/swag.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, cli_env
from test_e2e_stages import write_mrpc
from test_squad_cli import write_squad_files
from test_swag_cli import write_swag_files

from sparsebert_cli.config import STAGES

pytestmark = pytest.mark.slow

# Runs the examples one after another in this process; prints one JSON line per example.
DRIVER = """
import json, sys
from sparsebert_cli.cli import main
for args in json.loads(sys.argv[1]):
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    print("EXAMPLE " + json.dumps({"args": args, "code": code}), flush=True)
"""


def readme_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def readme_examples(cwd: Path, env: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """(the blocks' other shell lines, such as a heredoc writing example data; the `sparsebert`
    lines as arguments, expanded by bash as a user's shell would: `$PWD`, `~`, comments)."""
    setups, examples = [], []
    for block in readme_blocks():
        lines = block.splitlines()
        examples += [
            line.removeprefix("sparsebert ") for line in lines if line.startswith("sparsebert ")
        ]
        other = [line for line in lines if not line.startswith(("sparsebert ", "make "))]
        if any(line.strip() for line in other):
            setups.append("\n".join(other) + "\n")
    expand = 'eval "set -- $1"; printf "%s\\0" "$@"'
    expanded = [
        subprocess.run(
            ["bash", "-c", expand, "_", line], cwd=cwd, env=env, capture_output=True, text=True
        ).stdout.split("\0")[:-1]
        for line in examples
    ]
    return setups, expanded


def smoke(args: list[str]) -> list[str]:
    """A training stage's example with debug=smoke; evaluate's (it trains nothing and takes no
    preset) and a tool's as written."""
    return [*args, "debug=smoke"] if args and args[0] in STAGES and args[0] != "evaluate" else args


def test_the_readme_has_examples_of_every_stage(tmp_path):
    _, examples = readme_examples(tmp_path, dict(os.environ))
    assert {args[0] for args in examples} >= set(STAGES)


def test_every_readme_example_runs_offline_with_debug_smoke(tmp_path):
    home = tmp_path / "home"
    write_mrpc(home / "glue_data")
    write_squad_files(home / "squad", v2=False)
    write_squad_files(home / "squad", v2=True)
    write_swag_files(home / "swag")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, **cli_env(work, HOME=str(home))}
    setups, examples = readme_examples(work, env)
    for script in setups:  # the data the examples read (a heredoc in the README)
        subprocess.run(["bash", "-c", script], cwd=work, env=env, check=True, timeout=120)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([smoke(args) for args in examples])],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    results = [
        json.loads(line.removeprefix("EXAMPLE "))
        for line in proc.stdout.splitlines()
        if line.startswith("EXAMPLE ")
    ]
    failed = [" ".join(r["args"]) for r in results if r["code"] != 0]
    assert len(results) == len(examples) and not failed, (
        failed,
        proc.stdout[-3000:],
        proc.stderr[-6000:],
    )
