"""`sparsebert <stage> -m ... --dry-run` lists the sweep's jobs and their folders and runs nothing."""

import json
import os
import sys
from pathlib import Path

from conftest import sparsebert

SWEEP = ["search", "-m", "debug=smoke", "trainer.max_steps=1", "mask.lam=1e-3,1e-2"]


def planned(stdout: str) -> dict[str, str]:
    """Job folder name → action, from the dry run's job lines."""
    rows = [line.split() for line in stdout.splitlines() if " [" in line]
    return {row[1].rsplit("/", 1)[-1]: row[0] for row in rows}


def test_dry_run_lists_every_job_and_writes_nothing(workdir):
    proc = sparsebert(*SWEEP, "mask.structure=unstructured,structured", "--dry-run", cwd=workdir)
    jobs = planned(proc.stdout)
    assert len(jobs) == 4 and set(jobs.values()) == {"run"}
    assert "debug=smoke,mask.lam=0.001,mask.structure=structured,trainer.max_steps=1" in jobs
    assert "4 job(s): 4 run; nothing was run" in proc.stdout
    assert not (workdir / "runs").exists()


def test_launch_settings_do_not_name_a_sweep_jobs_folder(workdir):
    """A sweep run with trainer.num_threads=1 wrote `...,trainer.num_threads=1` folders, so the
    same sweep without it would have redone every finished job: the settings the content hash
    leaves out (config.unnamed_overrides) leave the folder name too; per-step ones name it."""
    extra = (
        "trainer.num_threads=1",
        "trainer.log_every=1",
        "paths.cache_dir=.c",
        "logger.mode=offline",
    )
    jobs = planned(sparsebert(*SWEEP, *extra, "--dry-run", cwd=workdir).stdout)
    assert set(jobs) == {
        "debug=smoke,mask.lam=0.001,trainer.max_steps=1",
        "debug=smoke,mask.lam=0.01,trainer.max_steps=1",
    }
    pipeline = (
        "pipeline",
        "-m",
        "debug=smoke",
        "pipeline.search=['trainer.max_steps=2']",
        "--dry-run",
    )
    assert any(
        "pipeline.search" in name for name in planned(sparsebert(*pipeline, cwd=workdir).stdout)
    )


def test_dry_run_after_a_partial_sweep_marks_the_completed_jobs_skipped(workdir):
    sparsebert(*SWEEP[:-1], "mask.lam=1e-3", cwd=workdir)  # one of the two jobs, completed
    jobs = planned(sparsebert(*SWEEP, "--dry-run", cwd=workdir).stdout)
    assert jobs == {
        "debug=smoke,mask.lam=0.001,trainer.max_steps=1": "skip",
        "debug=smoke,mask.lam=0.01,trainer.max_steps=1": "run",
    }


def test_dry_run_flags_an_invalid_job_and_exits_non_zero(workdir):
    proc = sparsebert(*SWEEP[:-1], "mask.lam=1e-3,-1", "--dry-run", cwd=workdir, check=False)
    assert proc.returncode == 1
    assert planned(proc.stdout)["debug=smoke,mask.lam=-1,trainer.max_steps=1"] == "invalid"
    assert "mask.lam=-1.0 must be ≥ 0" in proc.stdout


def test_dry_run_refuses_a_key_the_stage_does_not_read(workdir):
    proc = sparsebert("evaluate", "-m", "mask=dense,no_diag", "--dry-run", cwd=workdir, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "`sparsebert evaluate` does not read mask (mask=dense,no_diag)" in proc.stderr


def test_dry_run_runs_a_job_where_one_was_refused_before_it_started(workdir):
    """A job refused for a config error leaves a failed manifest without a config hash; the
    corrected command may take its run_id (runs.job_manifest), and the plan says so."""
    single = ["search", "debug=smoke", "trainer.max_steps=1", "run_id=mine"]
    proc = sparsebert(*single, "mask.lam=-1", cwd=workdir, check=False)
    assert proc.returncode == 1
    assert (workdir / "runs" / "search" / "mine" / "manifest.json").exists()
    assert planned(sparsebert(*single, "--dry-run", cwd=workdir).stdout) == {"mine": "run"}


def test_dry_run_refuses_what_launching_refuses_on_the_command_line(workdir):
    """A size beside loaded weights, mask.from beside another mask in a single run: invalid in
    the plan too, not 'run'."""
    proc = sparsebert("finetune", "model=minilm", "model.num_layers=3", "--dry-run", cwd=workdir,
                      check=False)  # fmt: skip
    assert proc.returncode == 1 and "model.num_layers sets up a new model" in proc.stdout
    proc = sparsebert("pretrain", "mask.from=latest", "--dry-run", cwd=workdir, check=False)
    assert proc.returncode == 1 and "mask=dense does not read it" in proc.stdout


def test_dry_run_resolves_latest_as_a_launched_job_does(workdir):
    """`model.from=latest` is a run folder in the job's content hash: a completed job is 'skip',
    not 'refuse'; with no upstream run the plan says what launching would say."""
    sweep = ["finetune", "-m", "debug=smoke", "trainer.max_steps=1", "task=polarity"]
    proc = sparsebert(*sweep, "model.from=latest", "--dry-run", cwd=workdir, check=False)
    assert proc.returncode == 1 and "no completed 'pretrain' run under" in proc.stdout
    sparsebert("pretrain", "debug=smoke", "trainer.max_steps=1", cwd=workdir)
    sparsebert(*sweep, "model.from=latest", cwd=workdir)
    jobs = planned(sparsebert(*sweep, "model.from=latest,null", "--dry-run", cwd=workdir).stdout)
    assert sorted(jobs.values()) == ["run", "skip"], jobs


def test_dry_run_of_a_single_run_names_the_unfinished_run_it_would_resume(workdir):
    single = ["search", "debug=smoke", "trainer.max_steps=1"]
    sparsebert(*single, "run_id=first", cwd=workdir)
    manifest = workdir / "runs" / "search" / "first" / "manifest.json"
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "status": "interrupted"}))
    (line,) = [row for row in sparsebert(*single, "--dry-run", cwd=workdir).stdout.splitlines()
               if row.startswith("resume")]  # fmt: skip
    # the folder listed is the one the launched run continues in, not a new one
    assert line.split()[1].endswith("search/first")
    assert "the unfinished run of this config (interrupted)" in line
    again = sparsebert(*single, "run_id=first", "resume=never", "--dry-run", cwd=workdir).stdout
    assert planned(again) == {"first": "run"} and "restarts at step 0 (resume=never)" in again


def test_a_cluster_sweeps_device_is_not_checked_on_this_machine(workdir):
    """experiment=base asks for CUDA, which the login node (and this machine) lacks: through the
    slurm launcher its jobs run on compute nodes, so the plan says 'run' ('invalid' locally)."""
    sweep = ["pipeline", "-m", "experiment=base", "mask=dense", "task=mrpc"]
    local = sparsebert(*sweep, "--dry-run", cwd=workdir, check=False)
    assert local.returncode == 1 and "no CUDA device is visible" in local.stdout
    cluster = sparsebert(*sweep, "hydra/launcher=slurm", "--dry-run", cwd=workdir).stdout
    assert list(planned(cluster).values()) == ["run"]


def test_an_empty_runs_dir_variable_is_the_launch_folder_not_the_file_systems_root(workdir):
    """SPARSEBERT_RUNS_DIR set but empty made paths.runs_dir "" (the launch folder for the
    stages) and Hydra's run folder /<stage>/<run_id>, at the root."""
    proc = sparsebert("pretrain", "debug=smoke", "--dry-run", cwd=workdir,
                      env={"SPARSEBERT_RUNS_DIR": ""})  # fmt: skip
    (line,) = [row for row in proc.stdout.splitlines() if " [" in row]
    assert line.split()[1].startswith("pretrain/"), line


def test_a_pipelines_steps_are_planned_as_its_job_will_plan_them(workdir):
    """--dry-run said `run` for pipelines that the job refused at one of its steps: a per-step
    data folder that does not exist, or a preset (experiment=target_table once set mask.name:
    dam for every step) that a step refuses."""
    bad = "pipeline.finetune=['task.glue_dir=/nonexistent']"
    proc = sparsebert("pipeline", "-m", "debug=smoke", "task=mrpc", bad, "seed=0,1", "--dry-run",
                      cwd=workdir, check=False)  # fmt: skip
    assert proc.returncode == 1 and set(planned(proc.stdout).values()) == {"invalid"}
    assert (
        "pipeline step finetune (pipeline.finetune=['task.glue_dir=/nonexistent']): "
        "task.glue_dir=/nonexistent is not a folder" in proc.stdout
    )
    proc = sparsebert("pipeline", "experiment=target_table", "--dry-run", cwd=workdir)
    assert set(planned(proc.stdout).values()) == {"run"}


def test_a_slurm_sweep_says_what_each_job_asks_for_and_is_refused_without_a_cluster(workdir):
    """Its dry run read as a local one; launched with no cluster, submitit's 25-line traceback
    (and a multirun.yaml left behind). A single run ignores the launcher: it runs here."""
    slurm = ("pretrain", "-m", "debug=smoke", "seed=0,1", "trainer.nproc_per_node=2",
             "hydra/launcher=slurm", "hydra.launcher.partition=gpu")  # fmt: skip
    proc = sparsebert(*slurm, "--dry-run", cwd=workdir)
    assert set(planned(proc.stdout)) == {"debug=smoke,seed=0", "debug=smoke,seed=1"}
    assert proc.stdout.count("to SLURM: partition gpu, 2 GPU(s), 8 CPUs, 64 GB, 720 min") == 2
    single = sparsebert("pretrain", "debug=smoke", "hydra/launcher=slurm", "--dry-run", cwd=workdir)
    assert "(new folder)" in single.stdout and "SLURM" not in single.stdout
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python's folder: no srun
    refused = sparsebert(*slurm, cwd=workdir, env=env, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "hydra/launcher=slurm submits each job to a SLURM cluster, but no srun" in refused.stderr
    # the composed launcher decides, not the words: submitit's own SLURM option is refused too,
    # its local one (jobs in processes here) is no cluster
    plugin = [*slurm[:-2], "hydra/launcher=submitit_slurm"]
    refused = sparsebert(*plugin, cwd=workdir, env=env, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "hydra/launcher=submitit_slurm submits each job to a SLURM cluster" in refused.stderr
    assert (
        "to SLURM: partition none set (the cluster's default), 60 min"
        in sparsebert(*plugin, "--dry-run", cwd=workdir).stdout
    )
    local = sparsebert(*slurm[:-2], "hydra/launcher=submitit_local", "--dry-run", cwd=workdir)
    assert "SLURM" not in local.stdout and local.stdout.count("(new folder)") == 2
    assert not (workdir / "runs").exists()


def test_a_setting_the_composed_launcher_lacks_is_refused_with_the_settings_it_has(workdir):
    """Hydra's own answer suggested `+hydra.launcher.partition=...`, which its schema refuses too."""
    sweep = ("pretrain", "-m", "debug=smoke", "seed=0,1", "hydra.launcher.partition=gpu")
    for args in (sweep, (*sweep, "--dry-run")):
        proc = sparsebert(*args, cwd=workdir, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert (
            "error: hydra.launcher.partition: the launcher this command composes "
            "(hydra/launcher=basic) has no setting 'partition' (its settings: none); SLURM's"
        ) in proc.stderr
    single = ("pretrain", "debug=smoke", "hydra/launcher=joblib", "hydra.launcher.partition=gpu")
    proc = sparsebert(*single, cwd=workdir, check=False)
    assert (
        proc.returncode == 1 and "(hydra/launcher=joblib) has no setting 'partition'" in proc.stderr
    )
    assert "(its settings: n_jobs, backend," in proc.stderr
    assert not (workdir / "runs").exists()
