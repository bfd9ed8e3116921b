"""sparsebert pipeline: search → pretrain → finetune → evaluate with one config.

Each step is composed exactly as if it were run by hand (`sparsebert <step> <same overrides>`),
then wired to the run before it (the finetune step takes no trainer preset: `run`); evaluate,
whose config has no groups or presets, gets the pipeline's values of the keys it reads instead
(`evaluate_overrides`). A step's folder is named by the content hash of its resolved config
(`<runs_dir>/<step>/pipeline-<hash>`), so a completed upstream run with an identical config is
reused, by this sweep or a later one; concurrent jobs wait on the folder's lock (runs.hold).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.config import override_key
from sparsebert_cli.masks.config import SEARCHED_MASKS
from sparsebert_cli.stages import UPSTREAM, hashed_config

# How the pipeline runs a step in its folder: `launch.run_in_folder`, handed in by the launcher.
StepJob = Callable[..., dict[str, float]]  # launch.run_in_folder(cfg, run_dir, command, wait=)

GROUPS = ("mask", "model", "data", "task", "trainer", "logger")
# Keys that name the pipeline's own folder: a step's folder is named by its content hash.
PIPELINE_FOLDER = ("run_id", "sweep_name")
# Keys evaluate reads but not from the pipeline: its own stage and folder, the finetune step it
# evaluates (wired), and the task data, which it reads from that run's record.
NOT_HANDED = (*PIPELINE_FOLDER, "stage", "model.from_run", "task")


def _compose(step: str, overrides: list[str]) -> DictConfig:
    from hydra import compose

    cfg = compose(config_name=step, overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def _drop(overrides: list[str], group: str) -> list[str]:
    """Overrides without those that set `group` or a key inside it."""
    return [o for o in overrides if override_key(o).split(".")[0] != group]


def _leaves(node: DictConfig, prefix: str = "") -> dict[str, Any]:
    """The dotted keys of a config with their values (an empty mapping has none)."""
    found = {}
    for key, value in node.items():
        if isinstance(value, DictConfig):
            found |= _leaves(value, f"{prefix}{key}.")
        else:
            found[f"{prefix}{key}"] = value
    return found


def _override_value(value: Any) -> str:
    """`value` written as Hydra's override grammar reads it back: a string plain where the grammar
    reads it as that string (cpu, a plain path), else quoted."""
    if isinstance(value, str):
        try:
            if OverridesParser.create().parse_override(f"key={value}").value() == value:
                return value
        except HydraException:
            pass
        return QuotedString(text=value, quote=Quote.single).with_quotes()
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def evaluate_overrides(cfg: DictConfig) -> list[str]:
    """The pipeline's values of the keys evaluate reads (`NOT_HANDED` aside), where they differ
    from evaluate's defaults: the evaluation batch size or device a preset set in the pipeline
    reaches the evaluate step, whose config composes no preset."""
    default = _leaves(_compose("evaluate", []))
    handed = {
        key: OmegaConf.select(cfg, key)
        for key in default
        if not any(key == k or key.startswith(f"{k}.") for k in NOT_HANDED)
    }
    return [f"{k}={_override_value(v)}" for k, v in handed.items() if v != default[k]]


def run_step(step: str, common: list[str], cfg: DictConfig, job: StepJob) -> tuple[Path, dict]:
    """Compose, place (content hash) and run one step, or reuse its completed folder. The step
    gets the common overrides it reads and all of its own (`pipeline.<step>=[...]`), which
    `validate_config` refused up front if the step does not read them."""
    from sparsebert_cli.config import expand_path_fields
    from sparsebert_cli.validation import (
        check_command,
        preflight,
        read_overrides,
        unused_max_steps,
        validate_config,
    )

    own = list(cfg.pipeline[step])  # checked when the pipeline's config was validated
    overrides = [*read_overrides(step, common), *own]
    step_cfg = _compose(step, overrides)
    expand_path_fields(step_cfg)
    validate_config(step_cfg)
    preflight(step_cfg)
    check_command(step_cfg, own, single_run=False)
    unused = unused_max_steps(step_cfg, [o for o in overrides if o not in own])
    if unused:  # a common override, for search and pretrain
        print(
            f"[sparsebert] pipeline step {step}: {unused}; "
            f"\"pipeline.{step}=['trainer.epochs=0']\" trains it by steps.",
            flush=True,
        )
    chash = runs.config_hash(hashed_config(OmegaConf.to_container(step_cfg)))
    run_dir = Path(cfg.paths.runs_dir).resolve() / step / f"pipeline-{chash}"
    step_cfg.run_id = run_dir.name
    run_dir.mkdir(parents=True, exist_ok=True)  # an empty folder: announced only once it exists
    print(f"[sparsebert] pipeline step {step}: {run_dir}", flush=True)
    metrics = job(step_cfg, run_dir, runs.command_line(step, overrides), wait=True)
    return run_dir, metrics


def inherited_overrides(command_line: list[str]) -> list[str]:
    """The overrides of a pipeline's command line that its steps get as typed: all but the
    per-step lists, the pipeline's folder keys and the group choices (passed as resolved)."""
    return [
        o
        for o in command_line
        if not o.startswith("pipeline.") and override_key(o) not in (*PIPELINE_FOLDER, *GROUPS)
    ]


def resolved_references(cfg: DictConfig) -> list[str]:
    """The upstream run folders the pipeline resolved (`model.from=latest` → its folder, by
    `launch.prepare`) as overrides: every step starts from the runs that were latest when the
    pipeline started, and a step's folder is named by them, not by the word `latest`."""
    found = []
    for key in UPSTREAM["pipeline"]:
        value = OmegaConf.select(cfg, key)
        if value and (key != "mask.from_run" or cfg.mask.name == "from_run"):
            found.append(f"{key}={_override_value(value)}")
    return found


def run(cfg: DictConfig, run: runs.Run, run_step_job: StepJob) -> dict[str, float]:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    chosen = [f"{g}={hc.runtime.choices[g]}" for g in GROUPS if hc.runtime.choices.get(g)]
    # The group choices as resolved here, then every other override (values inside groups too),
    # the upstream references as the folders they resolved to.
    references = resolved_references(cfg)
    typed = [
        o
        for o in inherited_overrides(list(hc.overrides.task))
        if override_key(o) not in UPSTREAM["pipeline"]
    ]
    common = [*chosen, *typed, *references]
    pretrain_args = common
    if cfg.mask.name in SEARCHED_MASKS:  # search it, then pre-train with it frozen
        search_dir, _ = run_step("search", common, cfg, run_step_job)
        run.add_input("search", search_dir)
        pretrain_args = [*_drop(common, "mask"), "mask=from_run", f"mask.from_run={search_dir}"]
    pretrain_dir, _ = run_step("pretrain", pretrain_args, cfg, run_step_job)
    run.add_input("pretrain", pretrain_dir)
    # A trainer preset (trainer=lamb: LAMB at lr 6e-3) is a pre-training recipe: the finetune
    # step keeps finetune's own unless its per-step overrides choose one.
    fine = [o for o in _drop(common, "mask") if override_key(o) != "trainer"]
    wired = [*fine, "mask=checkpoint"]
    finetune_dir, _ = run_step(
        "finetune", [*wired, f"model.from_run={pretrain_dir}"], cfg, run_step_job
    )
    run.add_input("finetune", finetune_dir)
    evaluate_dir, metrics = run_step(
        "evaluate", [*evaluate_overrides(cfg), f"model.from_run={finetune_dir}"], cfg, run_step_job
    )
    run.add_input("evaluate", evaluate_dir)
    return metrics
