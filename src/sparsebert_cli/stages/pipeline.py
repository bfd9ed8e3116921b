"""sparsebert pipeline: search → pretrain → finetune → evaluate with one config.

Each step is composed exactly as if it were run by hand (`sparsebert <step> <same overrides>`),
then wired to the run before it (the finetune step takes no trainer preset: `run`); evaluate,
whose config has no groups or presets, gets the pipeline's values of the keys it reads instead
(`evaluate_overrides`). A step's folder is named by the content hash of its resolved config
(`<runs_dir>/<step>/pipeline-<hash>`), so a completed upstream run with an identical config is
reused, by this sweep or a later one; concurrent jobs wait on the folder's lock (runs.hold).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.config import override_key, typed_overrides
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.config import SEARCHED_MASKS
from sparsebert_cli.progress import say
from sparsebert_cli.stages import UPSTREAM, hashed_config
from sparsebert_cli.stages.inputs import references

# How the pipeline runs a step in its folder: `launch.run_in_folder`, handed in by the launcher.
StepJob = Callable[..., dict[str, float]]  # launch.run_in_folder(cfg, run_dir, command, wait=)

GROUPS = ("mask", "model", "data", "task", "trainer", "logger")
# Keys that name the pipeline's own folder: a step's folder is named by its content hash.
PIPELINE_FOLDER = runs.NAME_KEYS
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


# What the pipeline sets for a step itself: the mask (the pipeline's own, the searched one or
# the checkpoint's), the run a step starts from, the task. A step's own override of it would
# put the results of another setup under the pipeline's mask and task in the report.
WIRED = {
    "search": ("mask",),
    "pretrain": ("mask", "mask."),
    "finetune": ("mask", "mask.", "model.from_run", "task"),
    "evaluate": ("model.from_run",),
}


def _check_wired(step: str, own: list[str]) -> None:
    """Refuse a step's own override of what the pipeline sets for it (`WIRED`)."""
    for override in own:
        key = override_key(override)
        if any(key == w or (w.endswith(".") and key.startswith(w)) for w in WIRED[step]):
            raise SparseBertError(
                f"pipeline.{step}=[{override}]: the pipeline sets {key} of its {step} step "
                "itself (the mask and task of its command line, each step starting from the one "
                "before), and the report shows the results under those; set it on the "
                f"pipeline's command line (every step gets it), or run `sparsebert {step}` by "
                "hand for another setup."
            )


@dataclass
class Step:
    """One step of a pipeline as it will run: composed, checked and placed before any runs."""

    name: str
    overrides: list[str]  # all of them: the common ones it reads, the wiring, its own
    own: list[str]  # pipeline.<name>=[...]
    cfg: DictConfig
    run_dir: Path


def plan_step(step: str, common: list[str], cfg: DictConfig, device_here: bool = True) -> Step:
    """Compose, check and place (content hash) one step. The step gets the common overrides it
    reads and all of its own (`pipeline.<step>=[...]`); a value it cannot run with (its data
    files and device too, not its upstream runs: they do not exist yet) is refused naming the
    step, before any step of the pipeline has run."""
    from sparsebert_cli.config import expand_path_fields, rewrite_aliases
    from sparsebert_cli.validation import (
        check_command,
        check_local_inputs,
        read_overrides,
        validate_config,
    )

    # their keys were checked with the pipeline's config; model.from as on the command line
    own = rewrite_aliases(list(cfg.pipeline[step]))
    _check_wired(step, own)
    overrides = [*read_overrides(step, common), *own]
    step_cfg = _compose(step, overrides)
    expand_path_fields(step_cfg)
    try:
        validate_config(step_cfg)
        check_command(step_cfg, own, single_run=False)
        check_local_inputs(step_cfg, device_here)
    except SparseBertError as error:
        given = f" (pipeline.{step}={own})" if own else ""
        raise SparseBertError(f"pipeline step {step}{given}: {error}") from None
    chash = runs.config_hash(hashed_config(OmegaConf.to_container(step_cfg)))
    run_dir = Path(cfg.paths.runs_dir).resolve() / step / f"{runs.PIPELINE_PREFIX}{chash}"
    step_cfg.run_id = run_dir.name
    return Step(step, overrides, own, step_cfg, run_dir)


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
    return [f"{key}={_override_value(value)}" for key, value in references(cfg).items()]


def plan(
    cfg: DictConfig, choices: dict[str, str], command_line: list[str], device_here: bool = True
) -> list[Step]:
    """The steps of the pipeline of `cfg` in order, each wired to the folder of the step before
    it: `choices` are the group choices Hydra resolved, `command_line` its overrides;
    `device_here`: as for `validation.preflight`."""
    chosen = [f"{g}={choices[g]}" for g in GROUPS if choices.get(g)]
    # The group choices as resolved here, then every other override (values inside groups too),
    # the upstream references as the folders they resolved to.
    typed = [
        o for o in inherited_overrides(command_line) if override_key(o) not in UPSTREAM["pipeline"]
    ]
    common = [*chosen, *typed, *resolved_references(cfg)]
    steps = []
    pretrain_args = common
    if cfg.mask.name in SEARCHED_MASKS:  # search it, then pre-train with it frozen
        steps.append(plan_step("search", common, cfg, device_here))
        mask = ["mask=from_run", f"mask.from_run={steps[-1].run_dir}"]
        pretrain_args = [*_drop(common, "mask"), *mask]
    steps.append(plan_step("pretrain", pretrain_args, cfg, device_here))
    # A trainer preset (trainer=lamb: LAMB at lr 6e-3) is a pre-training recipe: the finetune
    # step keeps finetune's own unless its per-step overrides choose one.
    fine = [o for o in _drop(common, "mask") if override_key(o) != "trainer"]
    wired = [*fine, "mask=checkpoint", f"model.from_run={steps[-1].run_dir}"]
    steps.append(plan_step("finetune", wired, cfg, device_here))
    handed = [*evaluate_overrides(cfg), f"model.from_run={steps[-1].run_dir}"]
    steps.append(plan_step("evaluate", handed, cfg, device_here))
    return steps


def check_plan(cfg: DictConfig, command_line: list[str], device_here: bool = True) -> None:
    """Plan the steps outside a running pipeline job (`validate`, `--dry-run`), composed as the
    job will compose them: a step it would refuse is refused now."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sparsebert_cli.config import HYDRA_VERSION_BASE, conf_dir

    def check() -> None:
        hydra_cfg = compose("pipeline", overrides=command_line, return_hydra_config=True).hydra
        plan(cfg, dict(hydra_cfg.runtime.choices), command_line, device_here)

    if GlobalHydra.instance().is_initialized():
        check()
    else:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=HYDRA_VERSION_BASE):
            check()


def run(cfg: DictConfig, run: runs.Run, job: StepJob) -> dict[str, float]:
    """Run the planned steps in order, or reuse their completed folders."""
    from hydra.core.hydra_config import HydraConfig

    from sparsebert_cli.validation import preflight, unused_max_steps

    hc = HydraConfig.get()
    metrics: dict[str, float] = {}
    for step in plan(cfg, dict(hc.runtime.choices), typed_overrides(hc)):
        preflight(step.cfg)  # its upstream step has completed by now
        unused = unused_max_steps(step.cfg, [o for o in step.overrides if o not in step.own])
        if unused:  # a common override, for search and pretrain
            say(
                f"pipeline step {step.name}: {unused}; "
                f"\"pipeline.{step.name}=['trainer.epochs=0']\" trains it by steps."
            )
        step.run_dir.mkdir(parents=True, exist_ok=True)  # announced only once it exists
        say(f"pipeline step {step.name}: {step.run_dir}")
        command = runs.command_line(step.name, step.overrides)
        metrics = job(step.cfg, step.run_dir, command, wait=True)
        run.add_input(step.name, step.run_dir)
    return metrics
