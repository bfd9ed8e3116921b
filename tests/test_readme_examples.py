"""Every `sparsebert` example in the README's ```bash blocks runs offline with `debug=smoke`.

The README may promise only what the tool does. The examples run in order in one launch folder
(so `latest` finds the run an earlier example made), in one Python process (the imports are paid
once), with HOME pointing at a folder that holds small copies of the data the examples name:
~/glue_data (MRPC in the GLUE download layout), ~/squad (SQuAD v1.1 and v2.0) and ~/swag.
"""

import json
import os
import re
import shlex
import subprocess
import sys

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


def readme_examples() -> list[list[str]]:
    """The `sparsebert ...` lines of the README's bash blocks (comments dropped), as arguments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["sparsebert"]:
                examples.append(words[1:])
    return examples


def smoke(args: list[str]) -> list[str]:
    """A stage's example with debug=smoke; a tool's as written."""
    return [*args, "debug=smoke"] if args and args[0] in STAGES else args


def test_the_readme_has_examples_of_every_stage():
    assert {args[0] for args in readme_examples()} >= set(STAGES)


def test_every_readme_example_runs_offline_with_debug_smoke(tmp_path):
    home = tmp_path / "home"
    write_mrpc(home / "glue_data")
    write_squad_files(home / "squad", v2=False)
    write_squad_files(home / "squad", v2=True)
    write_swag_files(home / "swag")
    work = tmp_path / "work"
    work.mkdir()
    examples = [smoke(args) for args in readme_examples()]
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(examples)],
        cwd=work,
        env={**os.environ, **cli_env(work, HOME=str(home))},
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
