"""The `ls`, `validate` and `masks` tools (argparse; `report`'s lives in reporting/cli.py).

`sparsebert masks` prints the catalogue of fixed patterns (masks/catalogue.py); `--check` makes
the exit status 1 when some listed mask misses a universal-approximation condition (docs/paper.md §3)
at --layers."""

import argparse
import difflib
import json
import sys
import time
from pathlib import Path

from sparsebert_cli import runs
from sparsebert_cli.config import STAGES
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.progress import say, table_console
from sparsebert_cli.user_paths import path_is, user_path

# The manifest fields `ls --show` prints, in this order.
SHOWN_FIELDS = (
    "stage", "status", "command", "seed", "world_size", "config_hash", "git_sha", "duration_s",
    "error",
)  # fmt: skip


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def given_text(text: str) -> str:
    """argparse type: a name that is not empty (as a path, "" would be ".", the launch folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name; give a file or folder")
    return text


def given_path(text: str) -> Path:
    """argparse type: a path that is not empty."""
    return Path(given_text(text))


def ls_main(argv: list[str]) -> int:
    """`sparsebert ls [STAGE] [--runs-dir D] [--show RUN|latest] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="sparsebert ls", description="List runs with their status."
    )
    parser.add_argument("stage", nargs="?", choices=STAGES)
    parser.add_argument("--runs-dir", type=given_path, default=runs.default_runs_dir())
    parser.add_argument(
        "--show",
        type=given_text,  # as typed: a ./ marks a folder, not a run id
        metavar="RUN",
        help="print one run's manifest, metrics, inputs and the command that reruns it: RUN is its "
        "folder or its run id; 'latest' = the newest run (of STAGE, if given)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.show is not None:
        return _show(args.show, args.stage, args.runs_dir, args.json)
    if args.runs_dir.is_file():
        raise SparseBertError(
            f"--runs-dir {args.runs_dir} is a file, not a runs folder; give the folder "
            "that holds <stage>/<run_id> folders (runs/ by default)."
        )
    if not args.runs_dir.is_dir():
        print(
            f"note: {args.runs_dir} does not exist: no runs there yet, or a mistyped --runs-dir.",
            file=sys.stderr,
        )
    rows = []
    for run_dir, manifest in runs.iter_runs(args.runs_dir, args.stage):
        status = runs.observed_status(run_dir, manifest)
        try:
            headline = runs.read_metrics(run_dir).get(runs.HEADLINE)
        except SparseBertError as e:
            status, manifest = runs.DAMAGED, {**manifest, "error": str(e)}
            headline = None
        damaged = status == runs.DAMAGED
        rows.append(
            {
                "run_dir": str(run_dir),
                "stage": manifest.get("stage"),
                "status": status,
                "started": manifest.get("started_at"),
                # a field may be null in a valid manifest (runs.MANIFEST_FIELDS)
                "command": (manifest.get("error") if damaged else manifest.get("command")) or "",
                "headline": headline if isinstance(headline, int | float) else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"runs under {args.runs_dir}")
    for col in ("stage", "status", "started", "run folder", "command", runs.HEADLINE):
        # The folder is what a user copies into model.from= or --show: never cut it.
        table.add_column(col, no_wrap=col == "run folder", overflow="fold")
    colours = {
        "completed": "green",
        "failed": "red",
        "running": "yellow",
        "interrupted": "yellow",
        runs.DAMAGED: "red",
    }
    for row in rows:
        started = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(row["started"]))
            if row["started"]
            else ""
        )
        status = row["status"] or "?"
        headline = "" if row["headline"] is None else f"{row['headline']:.4f}"
        table.add_row(  # plain Text: a command or error holding "[/path]" is not rich markup
            Text(row["stage"] or "?"),
            Text(status, style=colours.get(status, "white")),
            started,
            Text(row["run_dir"]),
            Text(row["command"]),
            headline,
        )
    table_console().print(table)
    return 0


def _show(ref: str, stage: str | None, runs_dir: Path, as_json: bool) -> int:
    """`ls --show RUN|latest`: the manifest's key fields, inputs, metrics and the rerun command."""
    from sparsebert_cli.summary import headline_metrics, rerun_command, upstream_of

    if ref == runs.LATEST:
        started = [(m.get("started_at") or 0, d) for d, m in runs.iter_runs(runs_dir, stage)]
        if not started:
            where = f"'{stage}' run" if stage else "run"
            raise SparseBertError(f"no {where} under {runs_dir} to show as 'latest'.")
        run_dir = max(started)[1]
    else:
        run_dir = user_path(ref)
        if "/" not in ref and not path_is(Path.is_dir, run_dir):  # a run id, as summaries print it
            named = sorted(d for d, _ in runs.iter_runs(runs_dir, stage) if d.name == ref)
            if len(named) > 1:
                raise SparseBertError(
                    f"{ref} names {len(named)} runs under {runs_dir}: "
                    f"{', '.join(map(str, named))}; pass one of those folders."
                )
            run_dir = named[0] if named else run_dir
    manifest = runs.load_manifest(run_dir)
    if manifest is None:
        raise SparseBertError(
            f"{run_dir} is not a run folder (no {runs.MANIFEST}), nor the run id of a run "
            f"under {runs_dir}; pass a run folder (runs/<stage>/<run_id>), a run id or 'latest' "
            "(`sparsebert ls` lists the runs)."
        )
    manifest = {**manifest, "status": runs.observed_status(run_dir, manifest)}
    metrics, damaged = {}, None
    try:
        metrics = runs.read_metrics(run_dir)
    except SparseBertError as e:
        damaged = str(e)
    rerun = None
    if manifest.get("command"):
        rerun = rerun_command(manifest["command"], run_dir.resolve(), upstream_of(manifest))
    if as_json:  # the manifest with what the text form adds
        shown = {**manifest, "run_dir": str(run_dir.resolve()), "metrics": metrics, "rerun": rerun}
        print(json.dumps({**shown, **({"metrics_damaged": damaged} if damaged else {})},
                         indent=2, sort_keys=True))  # fmt: skip
        return 0
    print(f"run folder: {run_dir.resolve()}")
    for key in SHOWN_FIELDS:
        if manifest.get(key) is not None:
            print(f"{key}: {manifest[key]}")
    for name, upstream in manifest["inputs"].items():
        print(f"input {name}: {upstream['run_dir']}")
    if damaged:
        print(f"metrics: damaged ({damaged})")
    elif metrics:
        print(f"metrics: {'  '.join(headline_metrics(metrics))}")
    if rerun:
        print(f"rerun or resume: {rerun}")
    return 0


def validate_main(argv: list[str]) -> int:
    """`sparsebert validate STAGE [overrides]`: compose and check a config without running it."""
    usage = f"usage: sparsebert validate STAGE [overrides]  (STAGE: {', '.join(STAGES)})"
    if "-h" in argv or "--help" in argv:
        print(
            f"{usage}\n\nCompose the stage's config with the overrides and check it as the stage "
            "would before running (keys, values, ranges, the upstream runs it reads), without "
            "running anything; prints 'config OK' and what would run, or one error paragraph "
            "(exit 1). For every job of a sweep: sparsebert STAGE -m <overrides> --dry-run."
        )
        return 0
    if not argv or argv[0] not in STAGES:
        close = difflib.get_close_matches(argv[0], STAGES, n=1) if argv else []
        said = f"sparsebert validate: unknown stage '{argv[0]}'" if argv else ""
        hint = f"{said}; did you mean '{close[0]}'?" if close else said
        print(f"{hint}\n{usage}" if hint else usage, file=sys.stderr)
        return 2
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from sparsebert_cli.config import rewrite_aliases
    from sparsebert_cli.dry_run import check_job, job_configs
    from sparsebert_cli.validation import check_command_line, describe

    stage, overrides = argv[0], rewrite_aliases(argv[1:])
    try:
        flags = [a for a in overrides if a.startswith("-")]
        if flags:
            raise SparseBertError(
                f"`sparsebert validate` takes overrides only, not {flags[0]}: it checks the "
                f"config of one job; `sparsebert {stage} -m <overrides> --dry-run` checks every "
                "job of a sweep."
            )
        check_command_line(stage, overrides)
        [(cfg, folder, job, cluster)] = job_configs(stage, overrides)
        upstream = check_job(cfg, folder, job, single_run=True, device_here=cluster is None)
    except (HydraException, OmegaConfBaseException, SparseBertError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{stage}: config OK ({describe(cfg, upstream)})")
    return 0


# --- sparsebert masks ---------------------------------------------------------------------------


def _masks_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sparsebert masks",
        description="Catalogue of attention mask patterns: sparsity, row density, connectivity.",
    )
    parser.add_argument("--seq-len", type=positive_int, default=128, help="sequence length n")
    parser.add_argument("--heads", type=positive_int, default=12, help="attention heads")
    parser.add_argument(
        "--layers", type=positive_int, default=12, help="layers L for the reachability check"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless every mask meets the universal-approximation conditions",
    )
    return parser.parse_args(argv)


def _passes(row: dict) -> bool:
    checks = row["connectivity"]
    return (
        checks["attends_other"]
        and checks["hamiltonian_path"] is True
        and checks["reaches_all_within_layers"]
    )


def _mark(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "unknown"}[value]


def print_mask_table(rows: list[dict], n: int, heads: int, layers: int) -> None:
    from rich.box import SIMPLE
    from rich.table import Table

    table = Table(title=f"Attention masks at n={n}, {heads} heads, {layers} layers", box=SIMPLE)
    table.add_column("mask", no_wrap=True)
    table.add_column("params", min_width=12)
    table.add_column("sparsity %", justify="right", no_wrap=True)
    table.add_column("row density %\nmin/mean/max", no_wrap=True)
    table.add_column("attends\nother", no_wrap=True)
    table.add_column("Hamilton\npath", no_wrap=True)
    table.add_column("reach\n(layers)", no_wrap=True)
    for row in rows:
        density, checks = row["row_density"], row["connectivity"]
        steps = checks["reach_layers"]
        table.add_row(
            row["name"],
            " ".join(f"{k}={v}" for k, v in row["params"].items()),
            f"{row['sparsity']:.2f}",
            f"{density['min']:.1f}/{density['mean']:.1f}/{density['max']:.1f}",
            _mark(checks["attends_other"]),
            _mark(checks["hamiltonian_path"]),
            f"> {layers}" if steps is None else str(steps),
        )
    table_console().print(table)


# From this n on, `sparsebert masks` takes seconds per pattern (each an H × n × n mask with its
# connectivity: under a minute for all at n = 4096 on 2 cores) and says which it measures.
SLOW_CATALOGUE_N = 2048


def masks_main(argv: list[str]) -> int:
    """`sparsebert masks [--seq-len N] [--heads H] [--layers L] [--json] [--check]`."""
    from sparsebert_cli.masks.catalogue import catalogue

    args = _masks_args(argv)

    def progress(name: str) -> None:  # on stderr: --json's output stays JSON
        say(f"masks: measuring {name} at n={args.seq_len}...", to_stderr=True)

    slow = args.seq_len >= SLOW_CATALOGUE_N  # seconds per pattern: say which one
    rows = catalogue(args.seq_len, args.heads, args.layers, progress if slow else None)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_mask_table(rows, args.seq_len, args.heads, args.layers)
    if args.check:
        failing = [row["name"] for row in rows if not _passes(row)]
        if failing:
            if not args.json:
                print(f"universal-approximation conditions not met by: {', '.join(failing)}")
            return 1
    return 0
