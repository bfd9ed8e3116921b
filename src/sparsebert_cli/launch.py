"""The life of one job: from a composed config to a completed (or failed, or interrupted) run.

`run_job` is the function every stage's Hydra app calls. It resolves the config (upstream runs
named `latest` included) and validates it, checks that the run folder is a safe name inside the
runs folder, takes the folder's lock for the whole job, skips a folder that already holds the same
completed job (or resumes an unfinished one of the same config), relaunches itself under torchrun
for DDP, runs the stage and turns errors into a one-paragraph message and a `failed` manifest.
In a multirun a failed job is recorded and the sweep goes on; the dispatcher exits 1 at the end.
Ctrl-C or SIGTERM marks the run `interrupted` and exits 130 or 143 with the resume command.
"""

import errno
import functools
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sparsebert_cli import interrupt, runs
from sparsebert_cli.config import override_key, typed_overrides, unnamed_overrides
from sparsebert_cli.data.hub import set_offline_env
from sparsebert_cli.errors import SparseBertError, first_line
from sparsebert_cli.progress import say
from sparsebert_cli.stages import hashed_config, reads
from sparsebert_cli.torchrun import KILLED_RANKS_ENV

FAILURES_ENV = "SPARSEBERT_FAILURES_FILE"  # the file where a sweep's failed jobs are noted
# Write errors that are the machine's state, not a bug: a clear message instead of a traceback.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
# Libraries that print their records with a handler of their own and pass them on to the root
# logger as well: each message (a hub retry) would show twice, plain and in Hydra's format.
_OWN_HANDLERS = ("huggingface_hub", "datasets")


def quiet_libraries() -> None:
    """Our progress bar and log lines replace the libraries' own bars; their records reach the
    screen once, through the root logger (Hydra's format, rich's console while a bar is live)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    for name in _OWN_HANDLERS:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True


def identity(cfg: DictConfig) -> tuple[dict, str]:
    """The resolved config of a job and its content hash."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return resolved, runs.config_hash(hashed_config(resolved))


def existing_run(run_dir: Path, resolved: dict, chash: str) -> dict | None:
    """The manifest of the run of this config (`resolved`, hash `chash`) already in `run_dir`, or
    None; the run of another config is refused, naming the settings that differ, and a completed
    one whose outputs changed since; either folder is left as it is."""
    existing = runs.job_manifest(run_dir)
    if existing is not None and existing.get("config_hash") != chash:
        raise runs.FolderRefused(
            f"{run_dir} already holds {runs.a_run_of(existing.get('stage'))} of a different config "
            f"(hash {existing.get('config_hash')}, this job {chash}){_differing(run_dir, resolved)}"
            "; choose another folder with run_id=<name> (or sweep_name=<name> for a sweep), or "
            "delete that folder."
        )
    if existing is not None and existing.get("status") == "completed":
        altered = runs.altered_outputs(run_dir, existing)
        if altered:
            raise SparseBertError(
                f"{run_dir} completed with this config, but {len(altered)} of its outputs are "
                f"missing or changed since ({', '.join(altered[:3])}): it cannot be reused. Delete "
                "that folder to run the job again, or restore the files."
            )
    return existing


def _differing(run_dir: Path, resolved: dict) -> str:
    """`: it differs in trainer.eval_every: 500 | 3 (that run | this job)`, from the run's
    config.yaml; nothing when that cannot be read."""
    import yaml

    from sparsebert_cli.differences import differences

    try:
        recorded = yaml.safe_load((run_dir / runs.CONFIG).read_text(encoding="utf-8"))
        found = differences([hashed_config(recorded), hashed_config(resolved)])
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return ""
    if not found:
        return (
            ": its settings are this job's, but a version of sparsebert that hashed them "
            "otherwise made it"
        )
    return f": it differs in {'; '.join(found[:5])} (that run | this job)"


def _mark_interrupted(run: runs.Run, reason: str) -> None:
    """Mark `run` interrupted with its newest complete checkpoint, which a rerun resumes from."""
    from sparsebert_cli.training.checkpoint import complete_checkpoints

    kept = complete_checkpoints(runs.layout(run.dir).checkpoints)
    run.interrupt(reason, kept[-1] if kept else None)


def execute(cfg: DictConfig, run_dir: Path, command: str) -> dict[str, float]:
    """Run `cfg.stage` in `run_dir` (or return the metrics of the same completed job there)."""
    import torch

    from sparsebert_cli.training.distributed import world

    quiet_libraries()
    resolved, chash = identity(cfg)
    existing = existing_run(run_dir, resolved, chash)
    if existing is not None and existing.get("status") == "completed":
        restart = (
            f" (resume={cfg.resume} restarts an unfinished run; to train a completed one again, "
            "delete its folder or choose another run_id=)"
            if reads(cfg.stage, "resume") and cfg.resume != "auto"
            else ""
        )
        say(f"{run_dir} already completed with this config: skipped{restart}.")
        return runs.read_metrics(run_dir)
    rank, world_size = world()
    run = runs.Run.start(run_dir, cfg.stage, resolved, chash, command, world_size, writer=rank == 0)
    torch.manual_seed(cfg.seed)  # model init: a function of the seed
    try:
        metrics = stage_runner(cfg.stage)(cfg, run)
    except (interrupt.Interrupted, KeyboardInterrupt) as e:  # the latter: no handler installed
        _mark_interrupted(run, str(e) or "SIGINT")
        raise
    except BaseException as e:
        run.fail(str(e) if isinstance(e, SparseBertError) else f"{type(e).__name__}: {e}")
        raise
    run.complete(metrics)
    if run.writer:
        from sparsebert_cli.training.checkpoint import discard_all

        (run_dir / runs.BEST_WEIGHTS).unlink(missing_ok=True)  # the final weights are in artifacts/
        # default checkpoints serve a stopped run until it completes (evaluate writes none)
        if cfg.trainer.get("ckpt_every", 0) <= 0:
            discard_all(runs.layout(run_dir).checkpoints)
    return metrics


def stage_runner(stage: str) -> Callable[[DictConfig, runs.Run], dict[str, float]]:
    """The `run(cfg, run)` function of a stage."""
    from sparsebert_cli.stages import evaluate, finetune, pipeline, pretrain, search

    runners = {
        "search": search.run,
        "pretrain": pretrain.run,
        "finetune": finetune.run,
        "evaluate": evaluate.run,
        "pipeline": functools.partial(pipeline.run, job=run_in_folder),
    }
    return runners[stage]


def relaunch_distributed(cfg: DictConfig, run_dir: Path, command: str) -> None:
    """Run this job under torchrun with `trainer.nproc_per_node` processes sharing `run_dir`."""
    from sparsebert_cli.training.checkpoint import complete_checkpoints

    run_dir.mkdir(parents=True, exist_ok=True)
    # The ranks' config, kept apart from the run's record (config.yaml), which only the job that
    # takes the folder writes: a refused job must not overwrite the record of the run there.
    launch_config = run_dir / runs.LAUNCH_CONFIG
    runs.atomic_write_text(launch_config, OmegaConf.to_yaml(cfg, resolve=True))
    nproc = cfg.trainer.nproc_per_node
    cmd = [
        sys.executable, "-m", "sparsebert_cli.torchrun", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "sparsebert_cli.rank", str(run_dir), command,
    ]  # fmt: skip
    say(f"launching {nproc} processes with torchrun")
    with tempfile.NamedTemporaryFile(prefix="sparsebert-killed-", suffix=".txt") as killed:
        try:
            code = _run_torchrun(cmd, run_dir, {KILLED_RANKS_ENV: killed.name})
        finally:
            launch_config.unlink(missing_ok=True)  # it may hold secrets, which only ranks need
        died = Path(killed.name).read_text(encoding="utf-8")
    manifest = runs.load_manifest(run_dir) or {}
    if code != 0 or manifest.get("status") != "completed":
        reason = manifest.get("error") or f"torchrun exited with status {code}"
        if died:  # the cause; the manifest holds what a surviving rank saw then
            kept = complete_checkpoints(runs.layout(run_dir).checkpoints)
            resume = f"; the same command resumes from {kept[-1].name}" if kept else ""
            reason = f"{died} (then: {first_line(reason)[:200]}){resume}"
        raise SparseBertError(f"distributed run in {run_dir} failed: {reason}")


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with_parent() -> None:
    """In torchrun's process, before it starts (Linux): SIGTERM it when this job dies (SIGKILL,
    the OOM killer), so that it stops the ranks instead of leaving them training unsupervised."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _run_torchrun(cmd: list[str], run_dir: Path, env: dict[str, str]) -> int:
    """torchrun's exit status. It runs in its own session and starts the ranks in theirs, so a
    stop request (Ctrl-C, SIGTERM) reaches them only through this process: it is passed on once,
    torchrun stops the ranks after their current step (or kills them after its shutdown timeout),
    and this process waits for that, then re-raises it; a run the ranks could not mark is marked
    `interrupted` here."""
    proc = subprocess.Popen(
        cmd, start_new_session=True, preexec_fn=_stop_with_parent, env={**os.environ, **env}
    )
    try:
        return proc.wait()
    except interrupt.Interrupted as stop:
        proc.send_signal(stop.signum)
        say(
            f"{stop}: the ranks stop after their current step (torchrun kills them after its "
            "shutdown timeout, 30 s by default)",
            to_stderr=True,
        )
        while proc.poll() is None:
            try:
                proc.wait()
            except interrupt.Interrupted:
                continue  # torchrun is stopping them; leaving now would orphan them
        manifest = runs.load_manifest(run_dir) or {}
        if manifest.get("status") in ("running", "failed"):  # killed, or a rank lost its peer
            _mark_interrupted(runs.Run(run_dir, manifest), str(stop))
        raise


def run_in_folder(cfg: DictConfig, run_dir: Path, command: str, wait: bool = False) -> dict:
    """Run a job in `run_dir`, holding its lock throughout: under torchrun when it asks for
    several processes, else here. `wait`: wait for a job holding the folder instead of refusing."""
    runs.check_run_folder(run_dir)
    with runs.hold(run_dir, wait=wait):
        if (
            OmegaConf.select(cfg, "trainer.nproc_per_node", default=1) > 1  # evaluate: one
            and "LOCAL_RANK" not in os.environ
            and cfg.stage != "pipeline"
        ):
            existing_run(run_dir, *identity(cfg))  # refused here: a rank's refusal is a failure
            relaunch_distributed(cfg, run_dir, command)
            return runs.read_metrics(run_dir)
        return execute(cfg, run_dir, command)


def _ours(run_dir: Path, cfg: DictConfig) -> bool:
    """Whether a failed job may mark `run_dir`: a safe name inside the runs folder, a run folder
    (or a new one), and no other job holding it."""
    try:
        for key in runs.NAME_KEYS:
            runs.check_name(key, cfg[key])
        runs.check_run_folder(run_dir)
        return runs.inside(run_dir, Path(cfg.paths.runs_dir)) and not runs.is_locked(run_dir)
    except (SparseBertError, OmegaConfBaseException, OSError):
        return False


def _record_failure(
    run_dir: Path, cfg: DictConfig, command: str, message: str, mark: bool = True
) -> None:
    """Mark the run failed (unless it completed) and note it for the dispatcher's sweep summary."""
    failures = os.environ.get(FAILURES_ENV)
    if failures:
        with open(failures, "a", encoding="utf-8") as f:
            f.write(f"{run_dir}: {message.splitlines()[0] if message else 'failed'}\n")
    if not mark or not _ours(run_dir, cfg):
        return
    # a job refused before it started: when, so `ls` sorts it and `ls --show latest` finds it
    manifest = runs.readable_manifest(run_dir) or {
        "stage": cfg.stage,
        "command": runs.redact(command),
        "started_at": time.time(),
    }
    if manifest.get("status") != "completed":
        manifest.update(status="failed", error=message)
        try:
            runs.atomic_write_json(run_dir / runs.MANIFEST, manifest)
            if not (run_dir / runs.CONFIG).exists():  # the report groups failed jobs by it
                runs.write_job_record(run_dir, command, _resolved_or_raw(cfg))
        except OSError as e:  # the folder that just failed may be unwritable or full
            print(f"warning: could not mark {run_dir} failed ({e}).", file=sys.stderr, flush=True)


def _resolved_or_raw(cfg: DictConfig) -> dict:
    """The resolved config, or as written when an interpolation in it cannot be resolved."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return OmegaConf.to_container(cfg, resolve=False)


def prepare(cfg: DictConfig, run_dir: Path) -> list[str]:
    """Resolve and check everything a job's folder and identity depend on, before any work.

    Every `${...}` is resolved (a bad one is a user error, not a traceback), folder names are one
    safe component inside paths.runs_dir, secrets stay out of names, `latest` and other upstream
    references become run folders, and the config is validated. Returns what each reference
    resolved to (a run prints it; `--dry-run` prepares every job the same way, quietly).
    """
    from sparsebert_cli.config import expand_path_fields
    from sparsebert_cli.stages.inputs import resolve_references
    from sparsebert_cli.validation import validate_config

    try:
        OmegaConf.resolve(cfg)
    except (OmegaConfBaseException, HydraException) as e:
        raise SparseBertError(config_error(e)) from None
    expand_path_fields(cfg)
    if cfg.stage == "pipeline":
        record_inherited_keys(cfg)
    for key in runs.NAME_KEYS:
        runs.check_name(key, cfg[key])
    runs_dir = Path(cfg.paths.runs_dir)
    if not runs.inside(run_dir, runs_dir):
        raise runs.FolderRefused(
            f"the run folder {run_dir} lies outside paths.runs_dir={runs_dir}; set paths.runs_dir "
            "to where runs should go instead of hydra.run.dir or hydra.sweep.dir."
        )
    secrets = runs.secret_values()
    named = [cfg.run_id, cfg.sweep_name]
    if reads(cfg.stage, "logger"):
        logger = cfg.logger
        named += [logger.project, logger.group, logger.entity, *logger.tags]
    if any(secret in str(value) for value in named for secret in secrets):
        raise runs.FolderRefused(
            "a secret from the environment (a *KEY*, *TOKEN*, *SECRET* or *PASSWORD* variable) "
            "would become a folder or W&B name (run_id, sweep_name, logger.project/group/entity/"
            "tags); use a plain name there."
        )
    said = resolve_references(cfg)
    validate_config(cfg)
    return said


def record_inherited_keys(cfg: DictConfig) -> None:
    """pipeline.inherited: the keys of the job's command line that its steps inherit (from
    Hydra's record of the job's overrides, set for a launched job and for `--dry-run` alike),
    less the launch settings no content hash reads (`config.unnamed_overrides`): a pipeline
    rerun with fewer threads is the same pipeline."""
    from hydra.core.hydra_config import HydraConfig

    from sparsebert_cli.stages.pipeline import inherited_overrides

    if HydraConfig.initialized():
        given = inherited_overrides(typed_overrides(HydraConfig.get()))
        launch_only = set(unnamed_overrides())
        cfg.pipeline.inherited = sorted({override_key(o) for o in given} - launch_only)


def config_error(e: BaseException) -> str:
    """One line for a config that cannot be resolved, naming the key."""
    from omegaconf.errors import InterpolationKeyError

    first = first_line(e, type(e).__name__)
    key = getattr(e, "full_key", None)
    where = f" at {key}" if key else ""
    hint = (
        " (an environment variable is $NAME in a path, which sparsebert expands, or ${oc.env:NAME})"
        if isinstance(e, InterpolationKeyError)
        else ""
    )
    return f"the config cannot be resolved{where}: {first}{hint}. Fix that value and rerun."


def unfinished_twin(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> Path | None:
    """The unfinished run of the same config that a single run without run_id= resumes instead
    of starting in `run_dir`, or None; a stage that reads no `resume` (evaluate) always does."""
    if any(override_key(o) == "run_id" for o in overrides) or (
        reads(cfg.stage, "resume") and cfg.resume != "auto"
    ):
        return None
    found = runs.unfinished_run(Path(cfg.paths.runs_dir), cfg.stage, identity(cfg)[1])
    # absolute, as a new run's folder: the summary and the resume command print it
    return None if found is None or found.resolve() == run_dir.resolve() else found.resolve()


def _resume_target(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> Path:
    """`run_dir`, or the unfinished run of the same config it resumes (said so)."""
    found = unfinished_twin(cfg, run_dir, overrides)
    if found is None:
        return run_dir
    with_id = [*overrides, f"run_id={found.name}"]
    say(
        f"resuming the unfinished run {found} (same config; status "
        f"{runs.load_manifest(found).get('status')}): "
        f"{runs.redact(runs.command_line(cfg.stage, with_id))}. "
        "Pass run_id=<new name> to start afresh instead."
    )
    _move_job_log(run_dir, found)
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()  # the folder Hydra made for a fresh run
    cfg.run_id = found.name
    return found


def _move_job_log(old: Path, new: Path) -> None:
    """Point Hydra's job log (`<stage>.log`, opened at its first line) into the resumed folder."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == old:
            handler.close()  # reopened, in the new folder, at the next line
            handler.baseFilename = str(new.resolve() / Path(handler.baseFilename).name)
            Path(old / Path(handler.baseFilename).name).unlink(missing_ok=True)


def _resume_command(cfg: DictConfig, run_dir: Path, multirun: bool) -> str:
    """`summary.rerun_command` of the command as given; for a single run with the upstream runs
    `latest` resolved to (by `prepare`)."""
    from sparsebert_cli.stages.inputs import references
    from sparsebert_cli.summary import rerun_command

    command = shlex.join(["sparsebert", cfg.stage, *sys.argv[1:]])
    return runs.redact(rerun_command(command, run_dir, None if multirun else references(cfg)))


def run_job(cfg: DictConfig) -> None:
    """The task function of every stage's Hydra app."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = typed_overrides(hydra_cfg)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # a sweep job's command keeps -m: it reruns into the job's folder of the sweep
    command = runs.command_line(cfg.stage, ["-m", *overrides] if multirun else overrides)
    if cfg.offline:
        set_offline_env()
    from sparsebert_cli.validation import check_command, preflight

    try:
        if not multirun and hydra_cfg.sweeper.params:  # a preset's sweep (experiment=demo)
            swept = " ".join(f"{k}={v}" for k, v in hydra_cfg.sweeper.params.items())
            say(
                f"note: this config sweeps {swept} (hydra.sweeper.params) only with -m; without "
                f"it this is one job of its own values. Add -m to run the sweep."
            )
        for line in prepare(cfg, run_dir):
            say(line)
        preflight(cfg)
        check_command(cfg, overrides, single_run=not multirun)
        if not multirun:
            run_dir = _resume_target(cfg, run_dir, overrides)
        run_in_folder(cfg, run_dir, command, wait=multirun)
        print_summary(run_dir)
    except interrupt.Interrupted as e:
        manifest = runs.readable_manifest(run_dir) or {}
        if manifest.get("status") == "interrupted":
            where = manifest.get("checkpoint") or (
                "completed steps are reused, the interrupted one resumes from its last "
                "checkpoint if it wrote one"
                if cfg.stage == "pipeline"
                else "no checkpoint yet: it restarts at step 0"
            )
            said = f"{run_dir} marked interrupted ({where}); resume with"
        else:
            said = "stopped before the run started; rerun with"
        print(
            f"interrupted ({e}): {said}: {_resume_command(cfg, run_dir, multirun)}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(e.exit_code) from None
    except Exception as e:
        message = _user_message(e, run_dir)
        if message is None:  # a bug, not a user mistake: keep the traceback
            traceback.print_exc()
            message = f"{type(e).__name__}: {e}"
        else:
            print(f"error: {message}", file=sys.stderr, flush=True)
        # A refused folder is not this job's to mark; it is still a failed job of the sweep.
        _record_failure(run_dir, cfg, command, message, mark=not isinstance(e, runs.FolderRefused))
        if not multirun:
            raise SystemExit(1) from None


def print_summary(run_dir: Path) -> None:
    """The end-of-stage summary (run folder, metrics, outputs, rerun command) on stdout."""
    from sparsebert_cli.summary import summary_lines

    print("\n".join(summary_lines(run_dir)), flush=True)


def _user_message(e: Exception, run_dir: Path) -> str | None:
    """The one-paragraph message of an error the user can fix, or None for a bug."""
    if isinstance(e, SparseBertError):
        return str(e)
    if isinstance(e, OmegaConfBaseException | HydraException):
        return config_error(e)
    if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
        return (
            f"cannot write {e.filename or run_dir} ({e.strerror or e}). Free disk space or make "
            "the runs folder writable (or set paths.runs_dir=<a writable folder>), then rerun the "
            "same command; completed checkpoints are kept and resume=auto continues from them."
        )
    return None


def rank_main(argv: list[str]) -> int:
    """What torchrun runs for each rank (through `python -m sparsebert_cli.rank <run_dir>
    <command>`): every rank reads the config the Hydra job wrote (runs.LAUNCH_CONFIG), so all
    ranks share one run id and one folder; only rank 0 writes files."""
    import torch.distributed as dist

    from sparsebert_cli.training.distributed import world

    run_dir, command = Path(argv[0]), argv[1]
    interrupt.install(hold=True)
    cfg = OmegaConf.load(run_dir / runs.LAUNCH_CONFIG)
    if cfg.offline:
        set_offline_env()
    try:
        execute(cfg, run_dir, command)
    except SparseBertError as e:
        print(f"error (rank {world()[0]}): {e}", file=sys.stderr, flush=True)
        return 1
    except interrupt.Interrupted as stop:  # rank 0 marked the run interrupted
        return stop.exit_code
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
