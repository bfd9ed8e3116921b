"""End to end, one stage after another in real subprocesses: search → pretrain → finetune →
evaluate by reference (`latest`), refusals of bad upstream runs, a NaN loss, W&B offline and a
GLUE task read from the original download layout.

The chain runs once per module (`chain`) and its folders are shared by the tests that read them.
"""

import json
import shutil
from pathlib import Path

import pytest
from conftest import cli_env, sparsebert
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

STAGES = ("search", "pretrain", "finetune", "evaluate")


def cli(*args: str, root: Path, check: bool = True, **env: str):
    return sparsebert(*args, cwd=root, check=check, env=cli_env(root, **env))


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def only_run(root: Path, stage: str) -> Path:
    found = sorted(p.parent for p in (root / "runs" / stage).glob("*/manifest.json"))
    assert len(found) == 1, f"expected one {stage} run, found {found}"
    return found[0].resolve()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error")]


def assert_clean_refusal(proc, *fragments: str) -> str:
    """Exit 1, no traceback, and exactly one `error: ...` line (one paragraph) with `fragments`."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict[str, Path]:
    """The four stages, each consuming the one before it by reference."""
    root = tmp_path_factory.mktemp("chain")
    printed = {
        "search": cli("search", "mask=dam", "debug=smoke", root=root),  # the design card command
        "pretrain": cli("pretrain", "debug=smoke", "mask=from_run", "mask.from=latest", root=root),
        "finetune": cli("finetune", "debug=smoke", "model.from=latest", "task=polarity", root=root),
        "evaluate": cli("evaluate", "trainer.eval_batch_size=16", root=root),
    }
    return {
        "root": root,
        "stdout": {stage: proc.stdout for stage, proc in printed.items()},
        **{stage: only_run(root, stage) for stage in STAGES},
    }


def summary(stdout: str, stage: str) -> dict[str, str]:
    """The end-of-stage summary block a stage printed last: {"status": ..., field: value}."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith(f"{stage} "))
    found = {"status": lines[start].split()[1]}
    for line in lines[start + 1 :]:
        key, _, value = line.strip().partition(": ")
        found[key] = value
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_ends_with_its_folder_metrics_and_rerun_command(chain, stage):
    shown = summary(chain["stdout"][stage], stage)
    run_dir = chain[stage]
    assert shown["status"] == "completed"
    assert shown["run folder"] == str(run_dir)
    assert f"mask sparsity={metrics(run_dir)['mask/sparsity']:.2f} %" in shown["metrics"]
    assert shown["rerun or resume"].endswith(f"run_id={run_dir.name}")
    assert shown["rerun or resume"].startswith(f"sparsebert {stage} ")


def test_search_summary_names_the_mask_and_pretrain_and_finetune_the_model(chain):
    assert summary(chain["stdout"]["search"], "search")["mask"] == str(
        chain["search"] / "artifacts" / "mask.safetensors"
    )
    for stage in ("pretrain", "finetune"):
        shown = summary(chain["stdout"][stage], stage)
        assert shown["model"] == str(chain[stage] / "artifacts" / "model")
    evaluated = summary(chain["stdout"]["evaluate"], "evaluate")
    assert evaluated["predictions"] == str(chain["evaluate"] / "predictions")
    assert "eval/headline=" in evaluated["metrics"]


def test_search_progress_lines_show_the_mask_sparsity(chain):
    steps = [line for line in chain["stdout"]["search"].splitlines() if line.startswith("step ")]
    assert steps and all("sparsity=" in line for line in steps)


def test_the_printed_rerun_command_finds_the_same_completed_run(chain):
    command = summary(chain["stdout"]["evaluate"], "evaluate")["rerun or resume"]
    rerun = cli(*command.split()[1:], root=chain["root"])
    assert f"{chain['evaluate']} already completed with this config: skipped." in rerun.stdout
    assert summary(rerun.stdout, "evaluate")["run folder"] == str(chain["evaluate"])


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    """A pre-training whose loss becomes non-finite at step 2 (huge lr, no clipping)."""
    root = tmp_path_factory.mktemp("nan")
    proc = cli(
        "pretrain",
        "debug=smoke",
        "trainer.lr=1e30",
        "trainer.clip_grad=0",
        "trainer.max_steps=6",
        "run_id=nan",
        root=root,
        check=False,
    )
    return proc, root / "runs" / "pretrain" / "nan"


# --- 1. the chain by reference -----------------------------------------------------------------


def test_chain_runs_are_completed_and_name_their_upstream_runs(chain):
    for stage in STAGES:
        assert manifest(chain[stage])["status"] == "completed", stage
    assert manifest(chain["search"])["inputs"] == {}
    wiring = {"pretrain": ("mask", "search"), "finetune": ("model", "pretrain")}
    wiring["evaluate"] = ("model", "finetune")
    for consumer, (name, upstream) in wiring.items():
        recorded = manifest(chain[consumer])["inputs"][name]
        assert recorded["run_dir"] == str(chain[upstream])
        assert recorded["stage"] == upstream
        assert recorded["config_hash"] == manifest(chain[upstream])["config_hash"]


def test_search_writes_the_mask_and_the_importance_trace(chain):
    artifacts = chain["search"] / "artifacts"
    mask = load_file(str(artifacts / "mask.safetensors"))
    assert mask, "mask.safetensors holds no tensor"
    info = json.loads((artifacts / "mask.json").read_text())
    assert (info["kind"], info["n"], info["heads"]) == ("dam_u", 64, 2)
    trace = load_file(str(artifacts / "importance_trace.safetensors"))
    # debug=smoke: 4 steps, a snapshot every 2 (mask.trace_every); shared layers, 2 heads, n=64.
    assert trace["steps"].tolist() == [2, 4]
    assert tuple(trace["probs"].shape) == (2, 1, 2, 64, 64)
    assert bool(((trace["probs"] >= 0) & (trace["probs"] <= 1)).all())


def test_pretrain_and_finetune_hand_on_a_model_with_the_searched_mask(chain):
    searched = chain["search"] / "artifacts"
    for stage in ("pretrain", "finetune"):
        model_dir = chain[stage] / "artifacts" / "model"
        for name in ("sparsebert.json", "mask.json", "model.safetensors"):
            assert (model_dir / name).is_file(), f"{stage}: no {name}"
        assert (model_dir / "mask.safetensors").read_bytes() == (
            searched / "mask.safetensors"
        ).read_bytes(), stage


def test_evaluate_writes_predictions_and_the_searched_sparsity(chain):
    run_dir = chain["evaluate"]
    rows = [
        json.loads(line)
        for line in (run_dir / "predictions" / "dev.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 40  # polarity: dev is one fold of 5 over 200 sentences
    assert {r["prediction"] for r in rows} <= {0, 1}
    found = metrics(run_dir)
    assert 0.0 <= found["eval/accuracy"] <= 1.0
    searched = json.loads((chain["search"] / "artifacts" / "mask.json").read_text())
    assert 0 < searched["sparsity"]["overall"] < 100
    assert found["mask/sparsity"] == pytest.approx(searched["sparsity"]["overall"], abs=1e-9)


# --- 2. consumers refuse bad upstream runs -----------------------------------------------------


def test_mask_from_a_pretrain_run_is_refused_as_the_wrong_stage(chain):
    root = chain["root"]
    proc = cli(
        "pretrain", "debug=smoke", "mask=from_run", f"mask.from={chain['pretrain']}", root=root,
        check=False,
    )  # fmt: skip
    assert_clean_refusal(
        proc,
        str(chain["pretrain"]),
        "is a 'pretrain' run, not a 'search' run",
        str(chain["search"]),
    )


def test_mask_from_latest_without_a_search_run_says_what_to_run(tmp_path):
    proc = cli(
        "pretrain", "debug=smoke", "mask=from_run", "mask.from=latest", root=tmp_path, check=False
    )
    assert_clean_refusal(proc, "no completed 'search' run", "`sparsebert search")
    failed = only_run(tmp_path, "pretrain")
    assert manifest(failed)["status"] == "failed"
    assert "no completed 'search' run" in manifest(failed)["error"]


def test_model_from_a_failed_run_is_refused(nan_run, tmp_path):
    _, failed_dir = nan_run
    proc = cli("finetune", "debug=smoke", f"model.from={failed_dir}", root=tmp_path, check=False)
    assert_clean_refusal(proc, str(failed_dir), "is not completed (status: failed;")


# --- 8. a non-finite loss ------------------------------------------------------------------------


def test_non_finite_loss_fails_the_run_with_a_clear_message(nan_run):
    proc, run_dir = nan_run
    line = assert_clean_refusal(proc, "loss became")
    found = manifest(run_dir)
    assert found["status"] == "failed"
    assert "the loss became" in found["error"]
    assert line == f"error: {found['error']}"
    assert not (run_dir / "artifacts").exists()


# --- 7. W&B offline ------------------------------------------------------------------------------


def test_wandb_offline_logs_inside_the_run_folder_without_secrets(tmp_path, monkeypatch):
    secret = "secret-value-123"
    monkeypatch.delenv("WANDB_DIR", raising=False)
    proc = cli(
        "pretrain", "debug=smoke", "logger=wandb", "run_id=wb", root=tmp_path, WANDB_API_KEY=secret
    )
    run_dir = tmp_path / "runs" / "pretrain" / "wb"
    assert manifest(run_dir)["status"] == "completed", proc.stderr
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    assert not (tmp_path / "wandb").exists()  # nothing beside the runs folder
    # The run's config is stored by wandb (files/config.yaml in older clients; the .wandb record
    # stream and debug.log in newer ones): find `stage: pretrain` in any spelling.
    spellings = (b"stage: pretrain", b"'stage': 'pretrain'", b'"stage": "pretrain"')
    stored = [p for p in offline[0].rglob("*") if p.is_file()]
    assert any(
        any(s in p.read_bytes() for s in spellings)
        or (
            p.suffix == ".wandb"
            and b"\x05stage" in p.read_bytes()
            and b'"pretrain"' in p.read_bytes()
        )
        for p in stored
    ), [str(p) for p in stored]
    leaks = [p for p in run_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []
    # the summary holds what metrics.json holds: the mask sparsity of a pre-training too
    (record,) = offline[0].glob("*.wandb")
    assert b"mask/sparsity" in record.read_bytes()


def test_a_failed_wandb_run_is_marked_failed_there(tmp_path):
    """W&B heard exit code 0 from a failed (or stopped) run."""
    args = ("pretrain", "debug=smoke", "logger=wandb", "run_id=wb", "trainer.lr=1e30",
            "trainer.max_steps=1")  # fmt: skip
    assert cli(*args, root=tmp_path, check=False).returncode == 1
    (offline,) = (tmp_path / "runs" / "pretrain" / "wb" / "wandb").glob("offline-run-*")
    assert "got exitcode: 1" in (offline / "logs" / "debug.log").read_text()  # wandb's own log


def test_a_resumed_wandb_run_continues_the_w_and_b_run_of_its_checkpoint(tmp_path):
    """A resumed run became a second W&B run of the same name."""
    args = ("pretrain", "debug=smoke", "logger=wandb", "run_id=wb", "trainer.ckpt_every=2")
    cli(*args, root=tmp_path)
    run_dir = tmp_path / "runs" / "pretrain" / "wb"
    shutil.rmtree(run_dir / "checkpoints" / "step-00000004")  # as if stopped after step 3
    record = manifest(run_dir)
    (run_dir / "manifest.json").write_text(json.dumps({**record, "status": "interrupted"}))
    assert "resumed from" in cli(*args, root=tmp_path).stdout
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and len({p.name.rsplit("-", 1)[-1] for p in offline}) == 1, offline


# --- 9. a GLUE task from the original download layout ---------------------------------------------

MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
MRPC_TEST_HEADER = "index\t#1 ID\t#2 ID\t#1 String\t#2 String"
SUBJECTS = ("the company", "the senator", "a spokesman", "the court", "shares", "the team")
VERBS = ("said on monday", "reported", "announced", "denied", "confirmed", "expected")
OBJECTS = ("profits rose sharply", "the deal was signed", "talks had stalled", "prices fell")


def sentence_pair(i: int) -> tuple[str, str, int]:
    s, v, o = SUBJECTS[i % 6], VERBS[(i // 6) % 6], OBJECTS[i % 4]
    first = f"{s} {v} that {o} ."
    if i % 2:  # a paraphrase
        return first, f"{o} , {s} {v} .", 1
    return first, f"{SUBJECTS[(i + 1) % 6]} {VERBS[(i + 2) % 6]} nothing about {o} .", 0


def write_mrpc(glue_dir: Path) -> None:
    folder = glue_dir / "MRPC"
    folder.mkdir(parents=True)
    for name, start, count in (("train", 0, 40), ("dev", 100, 12)):
        rows = [MRPC_HEADER]
        for i in range(start, start + count):
            a, b, label = sentence_pair(i)
            rows.append(f"{label}\t{1000 + i}\t{2000 + i}\t{a}\t{b}")
        (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    rows = [MRPC_TEST_HEADER]
    for index in range(10):
        a, b, _ = sentence_pair(200 + index)
        rows.append(f"{index}\t{3000 + index}\t{4000 + index}\t{a}\t{b}")
    (folder / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_glue_mrpc_from_the_download_layout_gives_metrics_and_a_submission(tmp_path):
    write_mrpc(tmp_path / "glue")
    cli(
        "finetune", "debug=smoke", "task=mrpc", f"task.glue_dir={tmp_path / 'glue'}", "model=tiny",
        "mask=no_diag", root=tmp_path,
    )  # fmt: skip
    cli("evaluate", root=tmp_path)
    run_dir = only_run(tmp_path, "evaluate")
    found = metrics(run_dir)
    for key in ("eval/f1", "eval/accuracy"):
        assert 0.0 <= found[key] <= 1.0, key
    assert found["mask/sparsity"] == pytest.approx(100 / 64)  # no_diag at n=64: 1/64 removed
    assert found["mask/seq_len"] == 64
    lines = (run_dir / "predictions" / "submission" / "MRPC.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction"
    rows = [line.split("\t") for line in lines[1:]]
    assert [int(index) for index, _ in rows] == list(range(10))
    assert {label for _, label in rows} <= {"0", "1"}


def test_finetuned_config_json_names_the_task_labels(chain):
    config = json.loads((chain["finetune"] / "artifacts" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    assert config["label2id"] == {"neg": 0, "pos": 1}


def test_a_completed_finetune_keeps_one_copy_of_its_final_weights(chain):
    weights = sorted(
        p.relative_to(chain["finetune"]) for p in chain["finetune"].rglob("*.safetensors")
    )
    assert Path("artifacts/model/model.safetensors") in weights
    assert Path("best_model.safetensors") not in weights


def test_a_finetune_that_keeps_its_last_weights_reports_its_last_evaluation(tmp_path):
    """task.select=last: no best-epoch selection on dev (whose maximum over evaluations is an
    optimistic score); the metrics are the last evaluation's, the weights the last step's."""
    cli(
        "finetune", "debug=smoke", "task=polarity", "model=tiny", "mask=dense", "trainer.eval_every=1",
        "task.select=last", root=tmp_path,
    )  # fmt: skip
    run_dir = only_run(tmp_path, "finetune")
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [row for row in logged if "eval/headline" in row]
    assert [row["step"] for row in evaluations] == [1, 2, 3, 4]
    found = metrics(run_dir)
    assert "eval/best_step" not in found
    assert found["eval/headline"] == evaluations[-1]["eval/headline"]
    cli("evaluate", root=tmp_path)
    assert metrics(only_run(tmp_path, "evaluate"))["eval/headline"] == pytest.approx(
        found["eval/headline"]
    )


@pytest.mark.slow
def test_a_presets_sweep_run_without_m_says_it_is_one_job(tmp_path):
    """`pipeline experiment=demo` without -m ran one job of the preset's 2 × 2 sweep without a
    word (its report folder then held nothing)."""
    proc = cli("pretrain", "experiment=demo", "debug=smoke", "trainer.max_steps=1", root=tmp_path)
    assert (
        "[sparsebert] note: this config sweeps mask=dense,dam task=polarity,lee_sts "
        "(hydra.sweeper.params) only with -m; without it this is one job of its own values."
    ) in proc.stdout
