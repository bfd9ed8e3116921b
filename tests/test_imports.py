"""No import cycle in src/: the graph of every `sparsebert_cli` import (a lazy one inside a
function included) has no cycle, so each module can be read, imported and tested on its own."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, cli_env

SRC = ROOT / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (SRC / "sparsebert_cli").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_src_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40
    assert cycle(graph) is None, " → ".join(cycle(graph))


# Imported by `validate` (and so by a refused command or a dry run) only where a check needs them.
HEAVY = {
    "transformers": "the model code and its config classes (2 s)",
    "transformers.models.bert.modeling_bert": "the BERT model code",
    "sklearn": "the task metrics (1.6 s)",
    "matplotlib": "the figures",
}
WHO_IMPORTED = """
import json, sys
from sparsebert_cli.cli import main
code = main(sys.argv[1:])
print("HEAVY " + json.dumps([code, [m for m in {heavy} if m in sys.modules]]))
"""


def heavy_imports(args: list[str], cwd: Path) -> list[str]:
    """The HEAVY modules `sparsebert <args>` imported, run in a fresh interpreter (it must exit 0)."""
    driver = WHO_IMPORTED.format(heavy=sorted(HEAVY))
    proc = subprocess.run(
        [sys.executable, "-c", driver, *args],
        cwd=cwd,
        env={**os.environ, **cli_env(cwd)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY ")]
    assert lines, proc.stdout + proc.stderr
    code, imported = json.loads(lines[0].removeprefix("HEAVY "))
    assert code == 0, proc.stdout + proc.stderr
    return imported


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["validate", "search", "debug=smoke"], set()),
        (["validate", "pretrain", "mask=bigbird"], set()),
        # model=minilm's config.json is read as a BertConfig: its positions must fit the task
        (["validate", "finetune", "task=mrpc", "task.glue_dir=."], {"transformers"}),
    ],
    ids=["search", "pretrain", "finetune"],
)
def test_validate_imports_only_what_its_checks_need(args, allowed, tmp_path):
    """`sparsebert validate` (every run's first step, and all a refused command does) ran in 6 s
    for a fine-tuning config, 4 s for a search, mostly importing code it did not use."""
    (tmp_path / "MRPC").mkdir()  # task.glue_dir=. holds the files validate looks for
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "MRPC" / name).write_text("")
    imported = heavy_imports(args, tmp_path)
    assert set(imported) <= allowed, {m: HEAVY[m] for m in set(imported) - allowed}


def test_validating_a_searched_mask_imports_neither_the_model_nor_the_figures(tmp_path):
    heavy_imports(["search", "debug=smoke", "trainer.max_steps=1"], tmp_path)
    imported = heavy_imports(
        ["validate", "pretrain", "debug=smoke", "mask=from_run", "mask.from=latest"], tmp_path
    )
    assert imported == [], imported
