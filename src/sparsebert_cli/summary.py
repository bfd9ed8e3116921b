"""What a finished stage tells its user: run folder, headline metrics, key outputs, and the
command that reruns or resumes it.

Printed by `launch.run_job` when a job ends (also when it was skipped as already completed) and
reused by `sparsebert ls --show`. Reads only the run folder, so it describes what is on disk.
Torch-free.
"""

import json
import shlex
from pathlib import Path

from sparsebert_cli import runs
from sparsebert_cli.config import MULTIRUN_FLAGS, NORM_FIELD, override_key
from sparsebert_cli.masks.config import MASK_FILE, PLOT_FILE
from sparsebert_cli.stages import UPSTREAM

# Metrics a summary shows: the held-out ones and the mask's, not the per-step training numbers.
SHOWN_PREFIXES = ("eval/", runs.MASK_SPARSITY, "inference/")


def _outputs(run_dir: Path) -> list[tuple[str, Path]]:
    """The output files and folders a run folder may hold, by what they are to the user."""
    run = runs.layout(run_dir)
    return [
        ("model", run.model),
        ("mask", run.artifacts / MASK_FILE),
        ("mask figure", run.artifacts / PLOT_FILE),
        ("importance trace", run.importance_trace),
        ("predictions", run.predictions),
        ("submission", run.submission),
        ("mask statistics", run.mask_stats),
    ]


def upstream_of(manifest: dict) -> dict[str, str]:
    """The upstream run folders a run consumed, by the key that named them (model.from_run)."""
    keys = UPSTREAM.get(str(manifest.get("stage")), {})
    inputs = manifest.get("inputs") or {}
    return {
        f"{name}.from_run": i["run_dir"] for name, i in inputs.items() if f"{name}.from_run" in keys
    }


def rerun_command(command: str, run_dir: Path, upstream: dict[str, str] | None = None) -> str:
    """The command that reruns this run into its own folder: a completed run is skipped, an
    unfinished one resumes from its last checkpoint (`resume=auto`).

    A single run gets `run_id=<its folder name>`, and its upstream references that said `latest`
    (or nothing, as evaluate's default) the folders they resolved to (`upstream`, by key): a newer
    upstream run would make `latest` another job. A sweep job gets `-m sweep_name=<its sweep>`,
    which puts it back in the same per-combination folder (named by its overrides as written)."""
    args = shlex.split(command)
    if len(args) < 2:
        return command
    # resume=never/restart on the rerun would discard the checkpoints it is meant to resume from
    kept = [a for a in args[2:] if a not in MULTIRUN_FLAGS and override_key(a) != "resume"]
    head, overrides = args[:2], kept
    sweep = runs.sweep_of(run_dir)
    if sweep is not None:
        overrides = [o for o in overrides if not o.startswith("sweep_name=")]
        return shlex.join([*head, "-m", *overrides, f"sweep_name={sweep}"])
    given = {override_key(o): o.split("=", 1)[-1] for o in overrides}
    for key, folder in (upstream or {}).items():
        if folder and folder != runs.LATEST and given.get(key, runs.LATEST) == runs.LATEST:
            overrides = [o for o in overrides if override_key(o) != key] + [f"{key}={folder}"]
    # The folder names the run: a run_id= of another folder (pipeline steps once recorded the
    # pipeline's) would start a new run there.
    own = f"run_id={run_dir.name}"
    overrides = [o for o in overrides if not o.startswith("run_id=") or o == own]
    if own not in overrides:
        overrides.append(own)
    return shlex.join([*head, *overrides])


def format_metric(key: str, value: float) -> str:
    """`eval/accuracy=0.8125`; the mask sparsity (a percentage) with its unit."""
    if key == runs.MASK_SPARSITY:
        return f"mask sparsity={value:.2f} %"
    if isinstance(value, int) or float(value).is_integer():
        return f"{key}={int(value)}"
    return f"{key}={value:.4g}"


def headline_metrics(metrics: dict) -> list[str]:
    """The metrics a summary shows, formatted, in a stable order."""
    shown = [
        (k, v)
        for k, v in metrics.items()
        if k.startswith(SHOWN_PREFIXES) and isinstance(v, int | float)
    ]
    return [format_metric(k, v) for k, v in sorted(shown, key=lambda kv: kv[0] != runs.HEADLINE)]


def outputs(run_dir: Path, manifest: dict) -> list[tuple[str, str]]:
    """(what, path) of the run's key outputs that exist; a pipeline's are its step folders."""
    found = []
    for what, path in _outputs(run_dir):
        if path.exists():
            detail = ""
            if path.is_dir() and what == "submission":
                detail = f"  ({', '.join(sorted(p.name for p in path.iterdir()))})"
            if what == "model" and _pre_ln(path):
                detail = (
                    "  (pre-LN: load it with sparsebert_cli.modeling.load_checkpoint; plain "
                    "transformers loads it without error but computes a post-LN BERT)"
                )
            found.append((what, f"{path}{detail}"))
    for name, upstream in manifest["inputs"].items():
        if manifest.get("stage") == "pipeline" and isinstance(upstream, dict):
            found.append((f"{name} step", str(upstream.get("run_dir"))))
    return found


def _pre_ln(model_dir: Path) -> bool:
    """Whether the saved model is pre-LN (layer_norm.py), which plain transformers misreads."""
    config = model_dir / runs.MODEL_CONFIG_FILE
    try:
        return json.loads(config.read_text()).get(NORM_FIELD) == "pre"
    except (OSError, ValueError, AttributeError):
        return False


def summary_lines(run_dir: Path) -> list[str]:
    """The end-of-stage summary of a run folder (empty when it has no manifest)."""
    run_dir = Path(run_dir)
    manifest = runs.load_manifest(run_dir)
    if manifest is None:
        return []
    metrics = runs.read_metrics(run_dir)
    lines = [
        f"{manifest.get('stage')} {manifest.get('status')}",
        f"  run folder: {run_dir}",
    ]
    shown = headline_metrics(metrics)
    if shown:
        lines.append(f"  metrics: {'  '.join(shown)}")
    for what, path in outputs(run_dir, manifest):
        lines.append(f"  {what}: {path}")
    if manifest.get("command"):
        rerun = rerun_command(manifest["command"], run_dir, upstream_of(manifest))
        lines.append(f"  rerun or resume: {rerun}")
    return lines
