"""The `sparsebert` command: a thin dispatcher in front of one Hydra app per stage, plus tools.

Hydra has no subcommands, so `argv[1]` picks the stage and every other argument goes to that
stage's `@hydra.main` untouched (`-m`, `--cfg job`, `--help`, `+key=`, `~key`, launchers...).
Tools (`report`, `masks`, `ls`, `validate`) are plain argparse programs. Nothing heavy (torch,
transformers, datasets) is imported here, so `--help` is instant.
"""

import difflib
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from sparsebert_cli.config import (
    HYDRA_VERSION_BASE,
    STAGES,
    is_multirun,
    register_hydra_extensions,
    rewrite_aliases,
)

STAGE_HELP = {
    "search": (
        "DAM mask search: learn the attention mask while pre-training",
        "sparsebert search mask=dam",
    ),
    "pretrain": (
        "MLM (+NSP) pre-training with a fixed mask (searched or named)",
        "sparsebert pretrain mask=no_diag",
    ),
    "finetune": (
        "fine-tune on a task (GLUE or embedded) with the model's mask",
        "sparsebert finetune task=mrpc",
    ),
    "evaluate": (
        "metrics, predictions, GLUE submission files, mask statistics",
        "sparsebert evaluate model.from=latest",
    ),
    "pipeline": (
        "search → pretrain → finetune → evaluate, reusing finished runs",
        "sparsebert pipeline -m mask=dense,no_diag,dam mask.lam=1e-4,1e-3",
    ),
}
TOOL_HELP = {
    "report": (
        "the paper-style results table of a sweep",
        "sparsebert report runs/pipeline/multirun",
    ),
    "masks": ("catalogue of mask patterns with their sparsity", "sparsebert masks --seq-len 128"),
    "ls": ("list runs with their status and overrides", "sparsebert ls finetune"),
    "validate": (
        "compose and check a stage's config without running it",
        "sparsebert validate finetune task=mrpc",
    ),
}


def run_stage(stage: str, args: list[str]) -> int:
    """Run one stage as a Hydra app; in a multirun, report the failed jobs and exit 1."""
    import hydra
    from omegaconf import OmegaConf

    from sparsebert_cli import interrupt
    from sparsebert_cli.config import conf_dir
    from sparsebert_cli.dry_run import check_launcher
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.launch import FAILURES_ENV, run_job
    from sparsebert_cli.validation import check_command_line, help_groups

    interrupt.install()
    args = rewrite_aliases(args)
    try:
        check_command_line(stage, args)
        if is_multirun(args) or any("launcher" in arg for arg in args):
            check_launcher(stage, args)
    except SparseBertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    register_hydra_extensions()
    if not OmegaConf.has_resolver("sb_help_groups"):  # `--help` (conf/hydra/default.yaml)
        OmegaConf.register_new_resolver("sb_help_groups", help_groups)
    with tempfile.NamedTemporaryFile(
        "w+", prefix="sparsebert-failures-", suffix=".txt"
    ) as failures:
        os.environ[FAILURES_ENV] = failures.name
        sys.argv = [f"sparsebert {stage}", *args]
        app = hydra.main(
            version_base=HYDRA_VERSION_BASE, config_path=str(conf_dir()), config_name=stage
        )(run_job)
        try:
            app()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if code:
                return code
        failed = Path(failures.name).read_text().splitlines()
    if failed:
        print(f"{len(failed)} job(s) failed:", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def print_overview() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sparsebert: sparse attention in BERT (SparseBERT, ICML 2021)")
    table.add_column("command", style="bold cyan")
    table.add_column("what it does")
    table.add_column("example", style="green")
    for name, (what, example) in STAGE_HELP.items():
        table.add_row(name, what, example)
    table.add_section()
    for name, (what, example) in TOOL_HELP.items():
        table.add_row(name, what, example)
    console = Console()
    console.print(table)
    console.print(
        "Stages are Hydra apps: add overrides (key=value, group=option), -m for a sweep, "
        "--cfg job to print the config, --help for the config groups. Tools take --help."
    )


def _tool(name: str) -> Callable[[list[str]], int]:
    if name == "report":
        from sparsebert_cli.reporting.cli import main

        return main
    from sparsebert_cli import tools

    return {"ls": tools.ls_main, "validate": tools.validate_main, "masks": tools.masks_main}[name]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_overview()
        return 0
    if argv[0] == "--version":
        from sparsebert_cli import __version__

        print(f"sparsebert {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.interrupt import Interrupted

    try:
        if name in STAGES:
            from sparsebert_cli import dry_run

            if dry_run.FLAG in rest:
                return dry_run.main(name, rewrite_aliases([a for a in rest if a != dry_run.FLAG]))
            return run_stage(name, rest)
        if name in TOOL_HELP:
            return _tool(name)(rest)
    except SparseBertError as e:  # a stage's or a tool's refusal, one paragraph
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as e:
        code = e.exit_code if isinstance(e, Interrupted) else 130
        if name in STAGES and is_multirun(rest):
            # a launcher's workers (joblib) ran the jobs: each marked its own run
            said = (
                "the sweep stopped; its started jobs are marked interrupted (one its launcher "
                "killed first reads so in `sparsebert ls`), and the same command again resumes "
                "them and skips the completed ones"
            )
        else:
            said = f"sparsebert {name} stopped before its run started"
        print(f"interrupted: {said}.", file=sys.stderr)
        return code
    except BrokenPipeError:  # the reader closed the pipe (`sparsebert masks --json | head`)
        # What is still buffered goes nowhere, so the interpreter's last flush cannot fail too;
        # the status of a Unix tool stopped by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    choices = [*STAGES, *TOOL_HELP]
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    print(
        f"sparsebert: unknown command '{name}'.{hint} Commands: {', '.join(choices)} "
        "(run `sparsebert --help` for the list with examples).",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
