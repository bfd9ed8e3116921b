"""End to end: a block DAM searched to a target sparsity records it; λ and a target are refused."""

import json

import pytest
from conftest import sparsebert

pytestmark = pytest.mark.slow

SMOKE = ["debug=smoke", "trainer.max_steps=3", "trainer.log_every=1"]


def test_block_dam_search_to_a_target_logs_the_controller_and_records_the_target(workdir):
    args = ["mask.structure=block", "model.block_size=16", "mask.lam=0", "mask.target_sparsity=0.5"]
    sparsebert("search", *SMOKE, *args, "run_id=block", cwd=workdir)
    run = workdir / "runs" / "search" / "block"
    meta = json.loads((run / "artifacts" / "mask.json").read_text())
    assert meta["kind"] == "dam_b" and meta["target_sparsity"] == 50.0
    assert meta["params"]["block_size"] == 16 and meta["params"]["target_sparsity"] == 0.5
    assert 0 <= meta["expected_sparsity"] <= 100 and "overall" in meta["sparsity"]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = {"mask/expected_sparsity", "mask/lambda1", "mask/lambda2", "mask/sparsity"}
    assert all(keys <= set(row) for row in logged if row.get("train/loss") is not None)


def test_lambda_and_a_target_together_are_refused_before_anything_runs(workdir):
    proc = sparsebert("search", *SMOKE, "mask.target_sparsity=0.9", cwd=workdir, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "mask.target_sparsity=0.9 and mask.lam=0.0001 are both set" in proc.stderr
    assert "mask.lam=0" in proc.stderr
