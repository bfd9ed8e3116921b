"""Determinism: the command a manifest records reruns the job to bitwise the same results on CPU."""

import shlex

import pytest
from conftest import sparsebert
from robust_helpers import TINY_SEARCH, losses, read_json, stable


@pytest.mark.slow
def test_the_recorded_command_reruns_to_identical_metrics_and_mask(workdir):
    args = ["search", *TINY_SEARCH, "mask.lam=1e-3", "seed=7", "run_id=first"]
    sparsebert(*args, cwd=workdir)
    first = workdir / "runs" / "search" / "first"
    shown = sparsebert("ls", "--show", str(first), cwd=workdir).stdout.splitlines()
    command = next(line for line in shown if line.startswith("command: "))[len("command: ") :]
    assert command == shlex.join(["sparsebert", *args])  # the exact command, quoting included
    assert "seed: 7" in shown and "status: completed" in shown

    again = [a if a != "run_id=first" else "run_id=second" for a in shlex.split(command)[1:]]
    sparsebert(*again, cwd=workdir)
    second = workdir / "runs" / "search" / "second"
    assert stable(read_json(second / "metrics.json")) == stable(read_json(first / "metrics.json"))
    assert losses(second) == losses(first)
    for artifact in ("mask.safetensors", "importance_trace.safetensors"):
        assert (second / "artifacts" / artifact).read_bytes() == (
            first / "artifacts" / artifact
        ).read_bytes()
    assert (
        read_json(second / "manifest.json")["config_hash"]
        == read_json(first / "manifest.json")["config_hash"]
    )
