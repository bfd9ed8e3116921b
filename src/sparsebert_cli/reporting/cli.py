"""`sparsebert report`: the paper's results table of a sweep, and the figures of a run.

    sparsebert report PATH... [--rows K,K] [--cols K] [--format table|md|csv|latex|json] [--out FILE]
    sparsebert report PATH... --frontier [--out-dir DIR]
    sparsebert report --figures RUN [--out-dir DIR]
    sparsebert report --patterns N [--out-dir DIR]
    sparsebert report --occlusion RUN [--max-distance D] [--examples K] [--out-dir DIR]

The table has one row per mask configuration with its sparsity, one column per task, cells
mean ± std over seeds with the seed count, and an Average over the columns with MNLI m and mm
counted as two (docs/paper.md §5); for QQP and MRPC (acc/F1) and STS-B (Pearson/Spearman) the mean
of the pair counts once, as in the GLUE benchmark's score (the paper's table prints one number per
column, which one is open). Metrics are shown ×100. See `reporting/table.py`.
Torch is imported only when figures are drawn, so `--help` and the table stay fast.
"""

import argparse
import sys
from pathlib import Path

from sparsebert_cli import runs
from sparsebert_cli.config import schema_key
from sparsebert_cli.errors import SparseBertError, UnwritableError
from sparsebert_cli.masks.config import META_FILE
from sparsebert_cli.progress import table_console
from sparsebert_cli.tools import given_path, positive_int
from sparsebert_cli.user_paths import path_is, user_path

SUMMARY_FORMATS = {"summary.md": "md", "summary.csv": "csv", "summary.json": "json"}
# The options each mode of `report` reads; another one given would be ignored, so it is refused.
MODE_OPTIONS = {
    "table": ("rows", "cols", "format", "out"),
    "frontier": ("out_dir",),
    "figures": ("out_dir",),
    "patterns": ("out_dir",),
    "occlusion": ("out_dir", "max_distance", "examples"),
}
OCCLUSION_DEFAULTS = {"max_distance": 8, "examples": 512}

EPILOG = """\
cells: mean ± sample std over seeds (the `seed` key) with the seed count n; a cell with failed
or interrupted jobs says so, one with no completed job reads failed, interrupted, running or
missing. A cell pools only runs whose configs differ in the seed alone (an embedded task's
task.fold counts like a seed; an upstream run by its own config): other differences, or a
repeated seed, read `mixed configs` / `duplicate seeds` (not pooled) with a warning naming the
keys and runs.
Avg: the plain mean over the columns, MNLI m and mm counted as two columns, the mean of acc and
F1 (QQP, MRPC) and of Pearson and Spearman (STS-B) counted once (GLUE's convention). Metrics
×100, sparsity in %.

examples:
  sparsebert report runs/pipeline/multirun/default
  sparsebert report 'runs/pipeline/multirun/*' --format md --out results.md
  sparsebert report runs/pipeline/multirun/lam --rows mask.lam --cols task.name
  sparsebert report runs/pipeline/multirun/default --frontier   (quality vs sparsity and speed)
  sparsebert report --figures latest          (importance and mask figures of a search run)
  sparsebert report --patterns 128 --out-dir figures
  sparsebert report --occlusion runs/search/<run>   (band occlusion beside σ(α), reporting/occlusion.py)
"""


def _keys(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise argparse.ArgumentTypeError("give one or more config keys, e.g. mask.name,mask.lam")
    return keys


def parse_args(argv: list[str]) -> argparse.Namespace:
    from sparsebert_cli.reporting.formats import FORMATS, SUFFIXES

    parser = argparse.ArgumentParser(
        prog="sparsebert report",
        description="The paper-style results table of run folders, and figures of a run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="sweep folders, run folders or globs"
    )
    parser.add_argument(
        "--rows",
        type=_keys,
        help="config keys of a row (default: mask.name, plus mask.structure, mask.lam and "
        "mask.target_sparsity for dam)",
    )
    parser.add_argument("--cols", type=_keys, help="config keys of a column (default: task.name)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="the table's format (default: --out FILE's, by its suffix .md/.csv/.tex/.json; else "
        "table)",
    )
    parser.add_argument("--out", type=given_path, metavar="FILE", help="write the table to FILE")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--figures",
        metavar="RUN",
        help="draw a run's figures: importance (search run) and binarised mask; 'latest' = newest "
        "completed search run",
    )
    mode.add_argument(
        "--patterns", type=positive_int, metavar="N", help="draw the fixed mask patterns at n = N"
    )
    mode.add_argument(
        "--occlusion",
        metavar="RUN",
        help="remove one attention band at a time from the trained model of a pretrain run (or the "
        "model a search run started from): held-out loss and hidden-state change beside σ(α)",
    )
    parser.add_argument(
        "--max-distance", type=positive_int, help="--occlusion: bands |i − j| ≤ D (default: 8)"
    )
    parser.add_argument(
        "--examples", type=positive_int, help="--occlusion: held-out examples (default: 512)"
    )
    parser.add_argument(
        "--frontier",
        action="store_true",
        help="write frontier.png/json/csv: quality against sparsity and against the attention "
        "time of each row's mask (timed here, forward+backward, ratio to dense SDPA), with the "
        "Pareto-optimal rows marked",
    )
    parser.add_argument(
        "--out-dir",
        type=given_path,
        help="figures folder (default: RUN/figures, or ./figures; --frontier: the first PATH)",
    )
    args = parser.parse_args(argv)
    modes = ("figures", "patterns", "occlusion")
    drawn = next((m for m in modes if getattr(args, m) is not None), None)
    if drawn and args.paths:
        parser.error("give either PATH... for the table or --figures/--patterns/--occlusion")
    if not drawn and not args.paths:
        parser.error("give the sweep or run folders to report on (PATH...), or --figures RUN")
    if drawn and args.frontier:
        parser.error("--frontier reports on PATH...; draw --figures/--patterns separately")
    args.mode = drawn or ("frontier" if args.frontier else "table")
    read = MODE_OPTIONS[args.mode]
    for option in sorted({o for options in MODE_OPTIONS.values() for o in options} - set(read)):
        if getattr(args, option) is not None:
            flag, mode = f"--{option.replace('_', '-')}", f"--{args.mode}"
            parser.error(
                f"{flag} is not read by {'the table' if args.mode == 'table' else mode}, which "
                f"reads {', '.join('--' + o.replace('_', '-') for o in read)}; drop {flag}"
                + ("; the table goes to --out FILE" if option == "out_dir" else "")
            )
    implied = SUFFIXES.get(args.out.suffix.lower()) if args.out else None
    if args.format and implied and args.format != implied:
        parser.error(
            f"--out {args.out} names a .{args.out.suffix[1:]} file, but --format {args.format} "
            f"was asked for; drop --format (the name's suffix sets it) or name the file for it"
        )
    args.format = args.format or implied or "table"
    for option, default in OCCLUSION_DEFAULTS.items():
        setattr(args, option, getattr(args, option) or default)
    for option in ("rows", "cols"):
        keys = [schema_key(k) for k in getattr(args, option) or ()]
        unknown = [k for k in keys if not _config_key(k)]
        if unknown:
            parser.error(
                f"--{option} {unknown[0]}: not a config key or group, so every run would read None "
                "there; give keys as `sparsebert <stage> --cfg job` prints them (e.g. mask.lam) "
                "or a group (experiment)"
            )
        setattr(args, option, keys or None)
    return args


def _config_key(key: str) -> bool:
    """Whether `key` names a setting of the schema (or one under a free-form dict setting), or
    a group whose choice the runs' overrides record (experiment=demo)."""
    from sparsebert_cli.validation import group_names, schema_keys

    keys, open_keys = schema_keys()
    groups = group_names() - {"hydra"}  # Hydra's own settings are not the runs' config
    return key in keys or key in groups or any(key.startswith(f"{k}.") for k in open_keys)


def write_summaries(sweep_dir: Path) -> list[Path]:
    """Write summary.md, summary.csv and summary.json of the runs under `sweep_dir` into it."""
    from sparsebert_cli.reporting.formats import RENDERERS
    from sparsebert_cli.reporting.table import build_table

    table = build_table([sweep_dir])
    written = []
    for name, fmt in SUMMARY_FORMATS.items():
        runs.atomic_write_text(Path(sweep_dir) / name, RENDERERS[fmt](table))
        written.append(Path(sweep_dir) / name)
    return written


def _table(args: argparse.Namespace) -> None:
    from sparsebert_cli.reporting.formats import RENDERERS, failures, note, to_rich
    from sparsebert_cli.reporting.table import build_table

    table = build_table(args.paths, args.rows, args.cols)
    for warning in table.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.out is not None:
        runs.atomic_write_text(args.out, RENDERERS[args.format](table))
        print(f"wrote {args.out}")
    elif args.format == "table":
        table_console().print(to_rich(table))
        print(note(table))
        for error in failures(table):
            print(f"failed: {error}")
    else:
        print(RENDERERS[args.format](table), end="")


def _occlusion(args: argparse.Namespace) -> None:
    from sparsebert_cli.reporting.occlusion import write_occlusion

    run_dir = _run_folder(args.occlusion)
    print(
        write_occlusion(
            run_dir, args.out_dir or runs.layout(run_dir).figures, args.max_distance, args.examples
        )
    )


def _figures(args: argparse.Namespace) -> None:
    from sparsebert_cli.masks.trace import snapshot_files
    from sparsebert_cli.reporting.attention_curves import write_attention_curves
    from sparsebert_cli.reporting.importance import write_importance_figures
    from sparsebert_cli.reporting.mask_figures import write_pattern_grid, write_run_mask_figure

    if args.patterns is not None:
        written = write_pattern_grid(args.patterns, args.out_dir or Path("figures"))
    else:
        run_dir = _run_folder(args.figures)
        out_dir = args.out_dir or runs.layout(run_dir).figures
        # what can be damaged first, so that a refusal leaves no figure half the set written:
        # the metric log (the attention curves') and the mask (its figure)
        runs.read_metrics_log(run_dir)
        mask_figure = write_run_mask_figure(run_dir, out_dir)
        written = [] if mask_figure is None else [mask_figure]
        folders = runs.layout(run_dir)
        if folders.importance_trace.is_file() or snapshot_files(folders.trace):
            written += write_importance_figures(run_dir, out_dir)
        written += write_attention_curves(run_dir, out_dir)
        if not written and runs.layout(run_dir).model.is_dir():
            print(
                f"nothing to draw: {run_dir} holds a model with dense attention and no held-out "
                "attention profile (no mask, no importance trace). Figures are drawn for a search "
                "run (importance and mask), a pretrain or finetune run with a sparse mask, and "
                "the attention through training of a run whose evaluations profiled it."
            )
            return
        if not written:
            run = runs.layout(run_dir)
            trace, searched, trained = (
                path.relative_to(run_dir)
                for path in (run.importance_trace, run.artifacts / META_FILE, run.model / META_FILE)
            )
            raise SparseBertError(
                f"{run_dir} has neither an importance trace ({trace}) nor a mask artifact "
                f"({searched} or {trained}); pass a completed search, pretrain or finetune run."
            )
    for path in written:
        print(path)


def _frontier(args: argparse.Namespace) -> None:
    from sparsebert_cli.reporting.frontier import build_frontier, write_frontier

    first = Path(args.paths[0])
    out_dir = args.out_dir or (first if first.is_dir() else Path("."))
    points, warnings = build_frontier(args.paths)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for path in write_frontier(points, out_dir):
        print(path)


def _run_folder(ref: str) -> Path:
    if ref == runs.LATEST:
        return runs.resolve("search", runs.LATEST, runs.default_runs_dir())
    run_dir = user_path(ref)
    if not path_is(Path.is_file, run_dir / runs.MANIFEST):
        raise SparseBertError(
            f"{run_dir} is not a run folder (no {runs.MANIFEST}); pass the folder of a completed "
            "search, pretrain or finetune run, or 'latest'."
        )
    status = runs.observed_status(run_dir, runs.load_manifest(run_dir))
    if status != "completed":  # a search's figures while it runs are worth a look, said so
        print(
            f"note: {run_dir} is not completed (status: {status}); its figures show what it had "
            "written so far.",
            file=sys.stderr,
        )
    return run_dir.resolve()


def main(argv: list[str]) -> int:
    """Run `sparsebert report`; a user mistake prints one paragraph and exits 1."""
    args = parse_args(argv)
    try:
        if args.mode == "frontier":
            _frontier(args)
        elif args.mode == "table":
            _table(args)
        elif args.mode == "occlusion":
            _occlusion(args)
        else:
            _figures(args)
    except SparseBertError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except UnwritableError as error:  # an output path (read-only, no such place, disk full)
        print(
            f"error: cannot write {error.filename} ({error.strerror or error}); choose an --out "
            "or --out-dir in a folder you can write to.",
            file=sys.stderr,
        )
        return 1
    except OSError as error:  # a run's file or folder that cannot be read
        print(
            f"error: cannot read {error.filename or 'a run file'} ({error.strerror or error}); "
            "make the run folders readable (or report on a copy of them).",
            file=sys.stderr,
        )
        return 1
    return 0
