"""The life of one job: from a composed config to a completed (or failed) run folder.

`run_job` is the function every stage's Hydra app calls. It validates the config, skips a run
folder that already holds the same completed job, relaunches itself under torchrun for DDP, runs
the stage and turns errors into a one-paragraph message and a `failed` manifest. In a multirun a
failed job is recorded and the sweep goes on; the dispatcher exits 1 at the end.
"""

import errno
import functools
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.data.hub import set_offline_env
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.stages import hashed_config

LAUNCH_CONFIG = ".launch-config.yaml"  # what `relaunch_distributed` hands to every rank
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


def execute(cfg: DictConfig, run_dir: Path, command: str) -> dict[str, float]:
    """Run `cfg.stage` in `run_dir` (or return the metrics of the same completed job there)."""
    import torch

    from sparsebert_cli.training.distributed import world

    quiet_libraries()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    chash = runs.config_hash(hashed_config(resolved))
    existing = runs.load_manifest(run_dir)
    if existing is not None and existing.get("config_hash") != chash:
        raise SparseBertError(
            f"{run_dir} already holds a '{existing.get('stage')}' run of a different config "
            f"(hash {existing.get('config_hash')}, this job {chash}); choose another folder with "
            "run_id=<name> (or sweep_name=<name> for a sweep), or delete that folder."
        )
    if existing is not None and existing.get("status") == "completed":
        print(f"[sparsebert] {run_dir} already completed with this config: skipped.", flush=True)
        return runs.read_json(run_dir / runs.METRICS)
    rank, world_size = world()
    run = runs.Run.start(run_dir, cfg.stage, resolved, chash, command, world_size, writer=rank == 0)
    torch.manual_seed(cfg.seed)  # model init: a function of the seed
    try:
        metrics = stage_runner(cfg.stage)(cfg, run)
    except BaseException as e:
        run.fail(str(e) if isinstance(e, SparseBertError) else f"{type(e).__name__}: {e}")
        raise
    run.complete(metrics)
    if run.writer:
        from sparsebert_cli.training.checkpoint import BEST_WEIGHTS

        (run_dir / BEST_WEIGHTS).unlink(missing_ok=True)  # the final weights are in artifacts/
    return metrics


def stage_runner(stage: str) -> Callable[[DictConfig, runs.Run], dict[str, float]]:
    """The `run(cfg, run)` function of a stage."""
    from sparsebert_cli.stages import evaluate, finetune, pipeline, pretrain, search

    runners = {
        "search": search.run,
        "pretrain": pretrain.run,
        "finetune": finetune.run,
        "evaluate": evaluate.run,
        "pipeline": functools.partial(pipeline.run, run_step_job=run_in_folder),
    }
    return runners[stage]


def relaunch_distributed(cfg: DictConfig, run_dir: Path, command: str) -> None:
    """Run this job under torchrun with `trainer.nproc_per_node` processes sharing `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    # The ranks' config, kept apart from the run's record (config.yaml), which only the job that
    # takes the folder writes: a refused job must not overwrite the record of the run there.
    runs.atomic_write_text(run_dir / LAUNCH_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    nproc = cfg.trainer.nproc_per_node
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "sparsebert_cli.launch", str(run_dir), command,
    ]  # fmt: skip
    print(f"[sparsebert] launching {nproc} processes with torchrun", flush=True)
    code = subprocess.call(cmd)
    manifest = runs.load_manifest(run_dir) or {}
    if code != 0 or manifest.get("status") != "completed":
        reason = manifest.get("error") or f"torchrun exited with status {code}"
        raise SparseBertError(f"distributed run in {run_dir} failed: {reason}")


def run_in_folder(cfg: DictConfig, run_dir: Path, command: str) -> dict[str, float]:
    """Run a job in `run_dir`: under torchrun when it asks for several processes, else here."""
    if (
        cfg.trainer.nproc_per_node > 1
        and "LOCAL_RANK" not in os.environ
        and cfg.stage != "pipeline"
    ):
        relaunch_distributed(cfg, run_dir, command)
        return runs.read_json(run_dir / runs.METRICS)
    return execute(cfg, run_dir, command)


def _record_failure(run_dir: Path, cfg: DictConfig, command: str, message: str) -> None:
    """Mark the run failed (unless it completed) and note it for the dispatcher's sweep summary."""
    try:
        manifest = runs.load_manifest(run_dir) or {"stage": cfg.stage, "command": command}
    except SparseBertError:
        manifest = {"stage": cfg.stage, "command": command}
    if manifest.get("status") != "completed":
        manifest.update(status="failed", error=message)
        try:
            runs.atomic_write_json(run_dir / runs.MANIFEST, manifest)
            if not (run_dir / runs.CONFIG).exists():  # the report groups failed jobs by it
                runs.write_job_record(run_dir, command, OmegaConf.to_container(cfg, resolve=True))
        except OSError as e:  # the folder that just failed may be unwritable or full
            print(f"warning: could not mark {run_dir} failed ({e}).", file=sys.stderr, flush=True)
    failures = os.environ.get(FAILURES_ENV)
    if failures:
        with open(failures, "a", encoding="utf-8") as f:
            f.write(f"{run_dir}: {message.splitlines()[0] if message else 'failed'}\n")


def run_job(cfg: DictConfig) -> None:
    """The task function of every stage's Hydra app."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    command = runs.command_line(cfg.stage, list(hydra_cfg.overrides.task))
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.offline:
        set_offline_env()
    try:
        from sparsebert_cli.config import expand_path_fields
        from sparsebert_cli.validation import preflight, validate_config

        expand_path_fields(cfg)
        validate_config(cfg)
        preflight(cfg)
        run_in_folder(cfg, run_dir, command)
        print_summary(run_dir)
    except Exception as e:
        message = _user_message(e, run_dir)
        if message is None:  # a bug, not a user mistake: keep the traceback
            traceback.print_exc()
            message = f"{type(e).__name__}: {e}"
        else:
            print(f"error: {message}", file=sys.stderr, flush=True)
        _record_failure(run_dir, cfg, command, message)
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
    if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
        return (
            f"cannot write {e.filename or run_dir} ({e.strerror or e}). Free disk space or make "
            "the runs folder writable (or set paths.runs_dir=<a writable folder>), then rerun the "
            "same command; completed checkpoints are kept and resume=auto continues from them."
        )
    return None


def rank_main(argv: list[str]) -> int:
    """The entry point torchrun starts for each rank (`python -m sparsebert_cli.launch <run_dir>
    <command>`): every rank reads the config the Hydra job wrote (LAUNCH_CONFIG), so all ranks
    share one run id and one folder; only rank 0 writes files."""
    import torch.distributed as dist

    from sparsebert_cli.training.distributed import world

    run_dir, command = Path(argv[0]), argv[1]
    cfg = OmegaConf.load(run_dir / LAUNCH_CONFIG)
    if cfg.offline:
        set_offline_env()
    try:
        execute(cfg, run_dir, command)
    except SparseBertError as e:
        print(f"error (rank {world()[0]}): {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1:]))
