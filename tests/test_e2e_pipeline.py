"""End to end: `sparsebert pipeline` reuses completed steps (folders named by config hash), a step
override makes a new folder for that step only, and a sweep with a failing job still completes
the others, exits 1 naming the failure and writes its summary.

The tests share one runs folder (`root`): a later test may find steps an earlier one completed,
which is the behaviour under test (reuse) and never changes what they assert.
"""

import json
from pathlib import Path

import pytest
from conftest import cli_env, sparsebert

from sparsebert_cli.reporting.table import build_table

pytestmark = pytest.mark.slow

PIPELINE = ("pipeline", "debug=smoke", "mask=dense", "task=polarity")
STEPS = ("pretrain", "finetune", "evaluate")


def cli(*args: str, root: Path, check: bool = True):
    return sparsebert(*args, cwd=root, check=check, env=cli_env(root))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def step_dirs(root: Path, step: str) -> set[Path]:
    return {p.parent for p in (root / "runs" / step).glob("pipeline-*/manifest.json")}


def last_pipeline_inputs(root: Path) -> dict[str, Path]:
    """The step folders that the newest (single) pipeline run used, from its manifest."""
    runs = [p.parent for p in (root / "runs" / "pipeline").glob("*/manifest.json")]
    newest = max(runs, key=lambda d: read_json(d / "manifest.json")["started_at"])
    found = read_json(newest / "manifest.json")
    assert found["status"] == "completed"
    return {name: Path(i["run_dir"]) for name, i in found["inputs"].items()}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def first(root) -> dict:
    """The first pipeline run: its step folders and their manifests."""
    cli(*PIPELINE, root=root)
    used = last_pipeline_inputs(root)
    return {"used": used, "manifests": {s: read_json(used[s] / "manifest.json") for s in used}}


def test_second_identical_pipeline_reuses_every_step(root, first):
    used, before = first["used"], first["manifests"]
    assert set(used) == set(STEPS)  # a fixed mask starts at pretrain: no search
    for step in STEPS:
        assert before[step]["status"] == "completed"

    second = cli(*PIPELINE, root=root)
    assert last_pipeline_inputs(root) == used
    for step in STEPS:
        assert f"{used[step]} already completed with this config: skipped." in second.stdout
        after = read_json(used[step] / "manifest.json")
        assert after["started_at"] == before[step]["started_at"]
        assert after == before[step]
        assert step_dirs(root, step) == {used[step]}


def test_the_evaluate_step_gets_the_pipelines_values_of_what_it_reads(first):
    """No group choice or preset reaches evaluate's composition; the eval batch size debug=smoke
    sets in the pipeline does, as a value."""
    from omegaconf import OmegaConf

    evaluated, tuned = first["used"]["evaluate"], first["used"]["finetune"]
    assert first["manifests"]["evaluate"]["command"] == (
        f"sparsebert evaluate trainer.eval_batch_size=16 model.from_run={tuned}"
    )
    cfg = OmegaConf.load(evaluated / "config.yaml")
    assert cfg.trainer.eval_batch_size == 16 and "mask" not in cfg and "data" not in cfg


def test_a_finetune_override_reuses_pretrain_and_makes_a_new_finetune_folder(root, first):
    base = first["used"]
    # Hydra's grammar needs the list item quoted: [trainer.lr=1e-4] is a parse error.
    proc = cli(*PIPELINE, "pipeline.finetune=['trainer.lr=1e-4']", "run_id=mine",
               root=root)  # fmt: skip
    assert (root / "runs" / "pipeline" / "mine" / "manifest.json").is_file()
    used = last_pipeline_inputs(root)
    assert used["pretrain"] == base["pretrain"]
    assert f"{base['pretrain']} already completed with this config: skipped." in proc.stdout
    assert read_json(base["pretrain"] / "manifest.json") == first["manifests"]["pretrain"]
    assert used["finetune"] != base["finetune"]
    assert step_dirs(root, "finetune") == {base["finetune"], used["finetune"]}
    tuned = read_json(used["finetune"] / "manifest.json")
    assert tuned["status"] == "completed"
    assert tuned["inputs"]["model"]["run_dir"] == str(base["pretrain"])
    assert "trainer.lr=1e-4" in tuned["command"]
    # the pipeline's run_id names its folder, not its steps' (rerun, a step's went to runs/*/mine)
    for step in ("finetune", "evaluate"):
        command = read_json(used[step] / "manifest.json")["command"]
        assert "run_id" not in command and "sweep_name" not in command
    # evaluate follows the new fine-tuned model into a new folder of its own
    assert used["evaluate"] != base["evaluate"]
    assert read_json(used["evaluate"] / "manifest.json")["inputs"]["model"]["run_dir"] == str(
        used["finetune"]
    )


def test_sweep_with_a_failing_job_completes_the_others_and_reports_the_failure(root):
    # mask.tau=0 fails validation (τ must be > 0, checked for every mask); tau=1 is the default.
    proc = cli("pipeline", "-m", *PIPELINE[1:], "mask.tau=1,0", root=root, check=False)
    sweep = root / "runs" / "pipeline" / "multirun" / "default"
    ok_dir = sweep / "debug=smoke,mask.tau=1,mask=dense,task=polarity"
    failed_dir = sweep / "debug=smoke,mask.tau=0,mask=dense,task=polarity"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    message = "mask.tau=0.0 must be > 0"
    assert "1 job(s) failed:" in proc.stderr
    listed = proc.stderr.split("1 job(s) failed:", 1)[1].strip().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{failed_dir}: {message}"), listed

    ok = read_json(ok_dir / "manifest.json")
    assert ok["status"] == "completed"
    # the recorded command reruns the job into its folder of the sweep: with -m (it lacked it)
    assert (
        ok["command"].startswith("sparsebert pipeline -m ")
        and "mask.tau=1" in ok["command"].split()
    )
    failed = read_json(failed_dir / "manifest.json")
    assert failed["status"] == "failed" and failed["error"].startswith(message)
    assert (sweep / "summary.md").is_file()
    assert str(failed_dir) in (sweep / "summary.md").read_text()

    table = build_table([sweep], rows=["mask.tau"])
    status = {row.key["mask.tau"]: [cell.status for cell in row.cells] for row in table.rows}
    assert status == {0.0: ["failed"], 1.0: ["ok"]}
    failed_cell = next(r.cells[0] for r in table.rows if r.key["mask.tau"] == 0.0)
    assert failed_cell.failed == 1 and failed_cell.errors[0].startswith(f"{failed_dir}: {message}")


def test_design_card_sweep_expands_to_six_valid_jobs_with_their_own_folders():
    """`sparsebert pipeline -m mask=dense,no_diag,dam mask.lam=1e-4,1e-3 debug=smoke`.

    Running its 6 jobs (17 training/eval steps) costs about a minute on 2 cores, so this checks
    what the sweep would run instead: Hydra's split of the arguments, each job's composed and
    validated config, and one distinct sweep folder per job.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sparsebert_cli.config import conf_dir, register_hydra_extensions, sb_slug
    from sparsebert_cli.validation import validate_config

    arguments = ["mask=dense,no_diag,dam", "mask.lam=1e-4,1e-3", "debug=smoke"]
    parsed = OverridesParser.create().parse_overrides(arguments)
    jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    assert len(jobs) == 6
    register_hydra_extensions()
    seen = set()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for job in jobs:
            cfg = compose(config_name="pipeline", overrides=list(job))
            validate_config(cfg)
            seen.add((cfg.mask.name, cfg.mask.lam))
    assert seen == {(m, lam) for m in ("dense", "no_diag", "dam") for lam in (1e-4, 1e-3)}
    folders = {sb_slug(",".join(sorted(job))) for job in jobs}
    assert len(folders) == 6


def test_a_trainer_preset_reaches_pre_training_and_not_fine_tuning(root):
    """`pipeline trainer=lamb` pre-trains with LAMB at its lr 6e-3 (it trained at the stage's
    1e-3) and fine-tunes with finetune's own AdamW at 5e-5 (LAMB at 6e-3 would diverge)."""
    import yaml

    cli(*PIPELINE, "trainer=lamb", root=root)
    used = last_pipeline_inputs(root)
    trainers = {
        step: yaml.safe_load((used[step] / "config.yaml").read_text())["trainer"]
        for step in ("pretrain", "finetune")
    }
    assert (trainers["pretrain"]["optimizer"], trainers["pretrain"]["lr"]) == ("lamb", 6e-3)
    assert (trainers["finetune"]["optimizer"], trainers["finetune"]["lr"]) == ("adamw", 5e-5)


def test_a_common_max_steps_that_the_finetune_step_cannot_use_is_said(root):
    """trainer.max_steps shortens search and pretrain; finetune (by epochs) ignored it silently."""
    proc = cli(
        *PIPELINE, "trainer.max_steps=3", "pipeline.finetune=['trainer.epochs=1']", root=root
    )
    assert "pipeline step finetune: trainer.max_steps=3 is not used" in proc.stdout


def test_a_pipeline_resolves_latest_when_it_starts_and_is_named_by_that_run(root, first):
    """`model.from=latest` was handed to the steps as the word: each step resolved it when it
    ran, and the step folders (and the pipeline's own) were named by `latest`, so the same
    command run after another pre-training completed was skipped as done, from the old model."""
    from omegaconf import OmegaConf

    def pipeline_from_latest_after(run_id: str) -> dict[str, Path]:
        cli("pretrain", "debug=smoke", "mask=no_diag", f"run_id={run_id}", root=root)
        cli(*PIPELINE, "model.from=latest", root=root)
        used = last_pipeline_inputs(root)
        started = read_json(used["pretrain"] / "manifest.json")["inputs"]["model"]["run_dir"]
        assert Path(started) == (root / "runs" / "pretrain" / run_id).resolve()
        return used

    before = pipeline_from_latest_after("newer")
    after = pipeline_from_latest_after("newest")
    assert after["pretrain"] != before["pretrain"]
    newest = max(
        (root / "runs" / "pipeline").glob("*/config.yaml"), key=lambda p: p.stat().st_mtime
    )
    assert OmegaConf.load(newest).model.from_run == str(
        (root / "runs" / "pretrain" / "newest").resolve()
    )


def test_launch_settings_on_a_pipelines_command_line_do_not_change_its_identity(root, first):
    """pipeline.inherited listed every key of the command line, trainer.num_threads too, so the
    rerun of a pipeline with fewer threads (README: slow on a shared machine) was refused as a
    different config in its own folder."""
    cli(*PIPELINE, "run_id=threads", root=root)
    proc = cli(*PIPELINE, "run_id=threads", "trainer.num_threads=1", "trainer.log_every=7",
               root=root)  # fmt: skip
    assert "already completed with this config: skipped" in proc.stdout


def test_a_bad_per_step_value_is_refused_before_any_step_runs(tmp_path):
    """A per-step value was checked only when the pipeline reached its step: `validate` said
    "config OK" and a run pre-trained first, then stopped on the fine-tuning learning rate."""
    bad = (*PIPELINE, "pipeline.finetune=['trainer.lr=-1']")
    for command in (("validate", *bad), bad):
        proc = cli(*command, root=tmp_path, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        said = "pipeline step finetune (pipeline.finetune=['trainer.lr=-1']): trainer.lr=-1.0"
        assert f"{said} must be > 0" in proc.stderr
    assert not (tmp_path / "runs" / "pretrain").exists()
