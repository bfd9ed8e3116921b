"""`sparsebert <stage> [-m] overrides... --dry-run`: the jobs a command would run, running none.

The jobs are those of Hydra's basic sweeper (the command-line sweeps and the config's
`hydra.sweeper.params`), each composed as the launcher would compose it, placed in the folder
Hydra would give it, and compared with what that folder holds: `run` (new), `skip` (the same
config completed there: the sweep would reuse it), `resume` (the same config started there and did
not complete; for a single run without run_id=, an unfinished run of it anywhere), `refuse`
(another config's run) or `invalid` (what a launched job would refuse before any work: its config,
command line, files, device or upstream runs). Nothing is written: no folder, no multirun.yaml,
no summary. `check_launcher` is what a launched command and its dry run both refuse of the
launcher Hydra would compose.
"""

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.config import MULTIRUN_FLAGS, conf_dir, is_multirun, register_hydra_extensions
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.stages import reads

FLAG = "--dry-run"
_LAUNCHER_SETTING = re.compile(r"Could not override 'hydra\.launcher\.([\w.]+)'")


def job_status(
    cfg: DictConfig, folder: Path, overrides: list[str], single_run: bool, device_here: bool = True
) -> tuple[str, str, Path]:
    """(action, why, the folder it acts in) of the job of `cfg` (`overrides` on its command line)
    in `folder`: run, skip, resume, refuse or invalid; a single run resumes an unfinished run of
    its config in that run's folder. The config goes through `check_job` first, so its content
    hash is the one the run would compare."""
    from sparsebert_cli.launch import existing_run, identity, unfinished_twin

    try:
        check_job(cfg, folder, overrides, single_run, device_here)
        twin = unfinished_twin(cfg, folder, overrides) if single_run else None
        manifest = runs.job_manifest(folder if twin is None else twin)
    except SparseBertError as error:
        return "invalid", str(error), folder
    if twin is not None:
        return "resume", f"the unfinished run of this config ({manifest.get('status')})", twin
    if manifest is None:
        return "run", "new folder", folder
    try:  # the launched job's own check of the run in its folder
        existing_run(folder, *identity(cfg))
    except runs.FolderRefused:
        return "refuse", "the folder holds a run of another config", folder
    except SparseBertError:
        return "refuse", "completed, but its outputs changed since", folder
    if manifest.get("status") == "completed":
        return "skip", "completed with this config", folder
    if reads(cfg.stage, "resume") and cfg.resume != "auto":
        why = f"this config, {manifest.get('status')}: restarts at step 0 (resume={cfg.resume})"
        return "run", why, folder
    return "resume", f"this config, {manifest.get('status')}", folder


def check_job(
    cfg: DictConfig, folder: Path, overrides: list[str], single_run: bool, device_here: bool = True
) -> dict[str, Path]:
    """What a launched job checks before any work (`launch.prepare`: `latest` resolved, paths
    expanded, names and folder checked; `preflight`; `check_command`; a pipeline's steps as the
    job will compose them). Returns the upstream run folders (by key); `device_here`: False for a
    cluster launcher's jobs (their device is on a compute node, not this machine)."""
    from sparsebert_cli.launch import prepare
    from sparsebert_cli.validation import check_command, preflight

    prepare(cfg, folder)
    upstream = preflight(cfg, device_here)
    check_command(cfg, overrides, single_run)
    if cfg.stage == "pipeline":
        from sparsebert_cli.stages.pipeline import check_plan

        check_plan(cfg, overrides, device_here)
    return upstream


def planned_jobs(stage: str, args: list[str]) -> list[tuple[Path, tuple[str, str], list[str]]]:
    """(folder, (action, why), job overrides) of every job `sparsebert <stage> <args>` would launch."""
    single_run = not is_multirun(args)
    planned = []
    for cfg, folder, job, cluster in job_configs(stage, args):
        action, why, acts_in = job_status(cfg, folder, job, single_run, cluster is None)
        planned.append((acts_in, (action, why if cluster is None else f"{why}; {cluster}"), job))
    return planned


def job_configs(
    stage: str, args: list[str]
) -> Iterator[tuple[DictConfig, Path, list[str], str | None]]:
    """(config, folder, overrides, what a cluster launcher requests for it: None when it runs on
    this machine) of every job `sparsebert <stage> <args>` would launch, each composed as the
    launcher would compose it; Hydra's config of the job is set while it is handled (a pipeline
    reads its command line from there)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun = is_multirun(args)
    overrides = [a for a in args if a not in MULTIRUN_FLAGS]
    loader, master = _compose(stage, args)
    if multirun:
        params = [f"{k}={v}" for k, v in (master.hydra.sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + overrides)
        batches = BasicSweeper.split_arguments(parsed, None)
        jobs = [list(job) for batch in batches for job in batch]
    else:
        jobs = [overrides]
    for job in jobs:
        cfg = loader.load_sweep_config(master, job) if multirun else master
        HydraConfig.instance().set_config(cfg)
        where = cfg.hydra.sweep if multirun else cfg.hydra.run
        folder = Path(where.dir) / (where.subdir if multirun else "")
        task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        # Hydra runs a single job here whatever the launcher
        yield task_cfg, folder, job, _cluster_request(cfg.hydra.launcher) if multirun else None


def _compose(stage: str, args: list[str]):
    """(Hydra's config loader, the config it composes for `sparsebert <stage> <args>`, hydra
    node included)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.utils import setup_globals
    from hydra.errors import ConfigCompositionException
    from hydra.types import RunMode

    register_hydra_extensions()
    setup_globals()
    overrides = [a for a in args if a not in MULTIRUN_FLAGS]
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(conf_dir())))
    mode = RunMode.MULTIRUN if is_multirun(args) else RunMode.RUN
    try:
        master = loader.load_configuration(config_name=stage, overrides=overrides, run_mode=mode)
    except ConfigCompositionException as error:
        setting = _LAUNCHER_SETTING.search(str(error))
        if setting is None:
            raise
        # Hydra's own message suggests `+hydra.launcher.<key>`, which its schema refuses too
        rest = [a for a in args if not a.lstrip("+~").startswith("hydra.launcher.")]
        launcher = _compose(stage, rest)[1].hydra
        settings = ", ".join(k for k in launcher.launcher if k != "_target_") or "none"
        raise SparseBertError(
            f"hydra.launcher.{setting[1]}: the launcher this command composes (hydra/launcher="
            f"{launcher.runtime.choices.get('hydra/launcher')}) has no setting '{setting[1]}' "
            f"(its settings: {settings}); SLURM's (partition, gpus_per_node, ...) come with "
            "hydra/launcher=slurm, parallel jobs on this machine with hydra/launcher=joblib "
            "hydra.launcher.n_jobs=N."
        ) from None
    return loader, master


def _is_slurm(launcher: DictConfig) -> bool:
    """Whether Hydra's launcher is submitit's SLURM one (its local one runs the jobs here)."""
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    return launcher.get("_target_") == SlurmQueueConf._target_


def check_launcher(stage: str, args: list[str]) -> None:
    """What the launcher `sparsebert <stage> <args>` composes refuses before Hydra starts: a
    setting it does not have, and in a sweep a SLURM launcher (`slurm`, submitit's own
    `submitit_slurm`, or one a preset chooses) where no srun is found (submitit's traceback
    else; a single run ignores the launcher)."""
    from hydra.errors import HydraException

    try:
        _, master = _compose(stage, args)
    except HydraException:  # Hydra reports a config it cannot compose itself
        return
    if is_multirun(args) and shutil.which("srun") is None and _is_slurm(master.hydra.launcher):
        raise SparseBertError(
            f"hydra/launcher={master.hydra.runtime.choices.get('hydra/launcher')} submits each "
            "job to a SLURM cluster, but no srun is found here; run the command on the "
            "cluster's login node, or drop the launcher (`--dry-run` lists the jobs anywhere)."
        )


def _cluster_request(launcher: DictConfig) -> str | None:
    """What Hydra's submitit SLURM launcher asks for each job, or None for a local launcher."""
    if not _is_slurm(launcher):
        return None
    partition = launcher.get("partition") or "none set (the cluster's default)"
    asks = (
        (launcher.gpus_per_node, "GPU(s)"),
        (launcher.cpus_per_task, "CPUs"),
        (launcher.mem_gb, "GB"),
        (launcher.timeout_min, "min"),
    )
    # submitit's own submitit_slurm leaves most unset: the cluster's defaults
    return ", ".join([f"to SLURM: partition {partition}"] + [f"{n} {u}" for n, u in asks if n])


def main(stage: str, args: list[str]) -> int:
    """Print the planned jobs, one line each, and a count; exit 0 (1 if any job is invalid)."""
    from hydra.errors import HydraException

    from sparsebert_cli.validation import check_command_line

    try:
        check_command_line(stage, args)
        planned = planned_jobs(stage, args)
    except (HydraException, SparseBertError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for folder, (action, why), job in planned:
        counts[action] = counts.get(action, 0) + 1
        print(f"{action:7} {folder}  [{' '.join(job) or 'no overrides'}]  ({why})")
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
    print(f"{len(planned)} job(s): {summary}; nothing was run ({FLAG}).")
    return 1 if "invalid" in counts else 0
