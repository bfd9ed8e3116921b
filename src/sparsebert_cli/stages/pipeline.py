"""sparsebert pipeline: search → pretrain → finetune → evaluate with one config.

Each step is composed exactly as if it were run by hand (`sparsebert <step> <same overrides>`),
then wired to the run before it. A step's folder is named by the content hash of its resolved
config (`<runs_dir>/<step>/pipeline-<hash>`), so a completed upstream run with an identical config
is reused, by this sweep or a later one; concurrent jobs wait on a file lock per folder.
"""

from pathlib import Path

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.launch import hashed_config, run_in_folder

GROUPS = ("mask", "model", "data", "task", "trainer", "logger")


def _compose(step: str, overrides: list[str]) -> DictConfig:
    from hydra import compose

    cfg = compose(config_name=step, overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def _drop(overrides: list[str], *keys: str) -> list[str]:
    """Overrides without those that set one of `keys` (a group or any key inside it)."""

    def key(o: str) -> str:
        return o.split("=", 1)[0].lstrip("+~")

    return [
        o for o in overrides if not any(key(o) == k or key(o).startswith(k + ".") for k in keys)
    ]


def run_step(step: str, overrides: list[str], cfg: DictConfig) -> tuple[Path, dict]:
    """Compose, place (content hash) and run one step, or reuse its completed folder."""
    from sparsebert_cli.validation import validate_config

    step_cfg = _compose(step, overrides)
    validate_config(step_cfg)
    chash = runs.config_hash(hashed_config(OmegaConf.to_container(step_cfg)))
    run_dir = Path(cfg.paths.runs_dir).resolve() / step / f"pipeline-{chash}"
    step_cfg.run_id = run_dir.name
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir) + ".lock"):
        print(f"[sparsebert] pipeline step {step}: {run_dir}", flush=True)
        metrics = run_in_folder(step_cfg, run_dir, runs.command_line(step, overrides))
    return run_dir, metrics


def run(cfg: DictConfig, run: runs.Run) -> dict[str, float]:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    chosen = [f"{g}={hc.runtime.choices[g]}" for g in GROUPS if hc.runtime.choices.get(g)]
    user = [o for o in hc.overrides.task if not o.startswith("pipeline.")]
    common = [*chosen, *_drop(user, *GROUPS), *_keep_values(user)]
    learnable = cfg.mask.name == "dam"

    mask_args = [o for o in common if o.split("=", 1)[0].lstrip("+~").split(".")[0] == "mask"]
    if learnable:
        search_dir, _ = run_step("search", [*common, *cfg.pipeline.search], cfg)
        run.add_input("search", search_dir)
        mask_args = ["mask=from_run", f"mask.from_run={search_dir}"]
    pretrain_dir, _ = run_step(
        "pretrain", [*_drop(common, "mask"), *mask_args, *cfg.pipeline.pretrain], cfg
    )
    run.add_input("pretrain", pretrain_dir)
    wired = [*_drop(common, "mask"), "mask=checkpoint"]
    finetune_dir, _ = run_step(
        "finetune", [*wired, f"model.from_run={pretrain_dir}", *cfg.pipeline.finetune], cfg
    )
    run.add_input("finetune", finetune_dir)
    evaluate_dir, metrics = run_step(
        "evaluate", [*wired, f"model.from_run={finetune_dir}", *cfg.pipeline.evaluate], cfg
    )
    run.add_input("evaluate", evaluate_dir)
    return metrics


def _keep_values(overrides: list[str]) -> list[str]:
    """Value overrides inside the groups (e.g. mask.lam=1e-3): they follow the group choices."""
    return [
        o
        for o in overrides
        if "." in o.split("=", 1)[0] and o.split("=", 1)[0].lstrip("+~").split(".")[0] in GROUPS
    ]
