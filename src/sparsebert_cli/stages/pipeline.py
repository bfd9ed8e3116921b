"""sparsebert pipeline: search → pretrain → finetune → evaluate with one config.

Each step is composed exactly as if it were run by hand (`sparsebert <step> <same overrides>`),
then wired to the run before it. A step's folder is named by the content hash of its resolved
config (`<runs_dir>/<step>/pipeline-<hash>`), so a completed upstream run with an identical config
is reused, by this sweep or a later one; concurrent jobs wait on the folder's lock (runs.hold).
"""

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.masks.config import SEARCHED_MASKS
from sparsebert_cli.stages import hashed_config

# How the pipeline runs a step in its folder: `launch.run_in_folder`, handed in by the launcher.
StepJob = Callable[..., dict[str, float]]  # launch.run_in_folder(cfg, run_dir, command, wait=)

GROUPS = ("mask", "model", "data", "task", "trainer", "logger")


def _compose(step: str, overrides: list[str]) -> DictConfig:
    from hydra import compose

    cfg = compose(config_name=step, overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def _key(override: str) -> str:
    """The config key an override sets: `+mask.lam=1e-3` → `mask.lam`, `mask=dam` → `mask`."""
    return override.split("=", 1)[0].lstrip("+~")


def _drop(overrides: list[str], group: str) -> list[str]:
    """Overrides without those that set `group` or a key inside it."""
    return [o for o in overrides if _key(o).split(".")[0] != group]


def run_step(step: str, common: list[str], cfg: DictConfig, job: StepJob) -> tuple[Path, dict]:
    """Compose, place (content hash) and run one step, or reuse its completed folder. The step
    gets the common overrides it reads (evaluate takes no mask, model sizes or data) and all of
    its own (`pipeline.<step>=[...]`), which are refused if it does not read them."""
    from sparsebert_cli.config import expand_path_fields
    from sparsebert_cli.validation import (
        check_overrides,
        preflight,
        read_overrides,
        validate_config,
    )

    own = list(cfg.pipeline[step])
    check_overrides(step, own)
    overrides = [*read_overrides(step, common), *own]
    step_cfg = _compose(step, overrides)
    expand_path_fields(step_cfg)
    validate_config(step_cfg)
    preflight(step_cfg)
    chash = runs.config_hash(hashed_config(OmegaConf.to_container(step_cfg)))
    run_dir = Path(cfg.paths.runs_dir).resolve() / step / f"pipeline-{chash}"
    step_cfg.run_id = run_dir.name
    run_dir.mkdir(parents=True, exist_ok=True)  # an empty folder: announced only once it exists
    print(f"[sparsebert] pipeline step {step}: {run_dir}", flush=True)
    metrics = job(step_cfg, run_dir, runs.command_line(step, overrides), wait=True)
    return run_dir, metrics


def run(cfg: DictConfig, run: runs.Run, run_step_job: StepJob) -> dict[str, float]:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    chosen = [f"{g}={hc.runtime.choices[g]}" for g in GROUPS if hc.runtime.choices.get(g)]
    user = [o for o in hc.overrides.task if not o.startswith("pipeline.")]
    # The group choices as resolved here, then every other override (values inside groups too).
    common = [*chosen, *(o for o in user if _key(o) not in GROUPS)]
    pretrain_args = common
    if cfg.mask.name in SEARCHED_MASKS:  # search it, then pre-train with it frozen
        search_dir, _ = run_step("search", common, cfg, run_step_job)
        run.add_input("search", search_dir)
        pretrain_args = [*_drop(common, "mask"), "mask=from_run", f"mask.from_run={search_dir}"]
    pretrain_dir, _ = run_step("pretrain", pretrain_args, cfg, run_step_job)
    run.add_input("pretrain", pretrain_dir)
    wired = [*_drop(common, "mask"), "mask=checkpoint"]
    finetune_dir, _ = run_step(
        "finetune", [*wired, f"model.from_run={pretrain_dir}"], cfg, run_step_job
    )
    run.add_input("finetune", finetune_dir)
    evaluate_dir, metrics = run_step(
        "evaluate", [*wired, f"model.from_run={finetune_dir}"], cfg, run_step_job
    )
    run.add_input("evaluate", evaluate_dir)
    return metrics
