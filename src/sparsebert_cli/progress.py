"""Progress wherever a user waits: data preparation, evaluation, prediction, training.

On a terminal these are rich displays on rich's one console, so a bar shown while the training
bar is live nests under it instead of breaking it, and `route_logging` sends log records through
that console while a display is live. Elsewhere (a log file, CI) each wait is one plain line, so
a log still says what the run was doing. The libraries' own bars stay off (`launch`).
"""

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")


def other_rank() -> bool:
    """A torchrun rank but the first: its status lines and spinners would repeat rank 0's."""
    from sparsebert_cli.training.distributed import world

    return world()[0] != 0


def say(text: str, *, to_stderr: bool = False) -> None:
    """One plain status line of the tool, `[sparsebert] text`, flushed at once so that a log
    keeps its order across processes (a pipeline's steps); on standard output from rank 0 only."""
    if other_rank() and not to_stderr:
        return
    print(f"[sparsebert] {text}", file=sys.stderr if to_stderr else sys.stdout, flush=True)


def on_terminal() -> bool:
    return sys.stdout.isatty()


def table_console() -> "Console":
    """A rich Console for printing a table: the terminal's, or at least 200 columns when piped
    or logged, so a table is not squeezed into 80."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(200, console.width))


@contextmanager
def waiting(description: str) -> Iterator[None]:
    """A spinner with the elapsed time while the block runs, then `description: done in Xs`."""
    start = time.perf_counter()
    if other_rank():
        yield
    elif on_terminal():
        from rich import get_console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with (
            route_logging(),
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                transient=True,
            ) as progress,
        ):
            progress.add_task(description, total=None)
            yield
        elapsed = time.perf_counter() - start
        get_console().print(f"[green]✓[/green] {description} ({elapsed:.1f} s)", highlight=False)
    else:
        say(f"{description}...")
        yield
        say(f"{description}: done in {time.perf_counter() - start:.1f} s")


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """Iterate over `items` with a transient bar on a terminal (a plain line elsewhere)."""
    if other_rank() or not on_terminal():
        say(f"{description} ({total} batch{'es' if total != 1 else ''})")
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, transient=True) as progress:
        yield from progress.track(items, total=total, description=description)


class _RichConsoleHandler(logging.Handler):
    """Writes log records through rich's one console (stdout), above any live display."""

    def emit(self, record: logging.LogRecord) -> None:
        from rich import get_console
        from rich.markup import escape

        try:
            get_console().print(escape(self.format(record)), highlight=False)
        except Exception:  # a log line must never end a run
            self.handleError(record)


@contextmanager
def route_logging() -> Iterator[None]:
    """While a display is live, the root logger's stream handlers write through rich's console."""
    root = logging.getLogger()
    streams = [
        h
        for h in root.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    if not streams or not on_terminal():
        yield
        return
    routed = _RichConsoleHandler(streams[0].level)
    routed.setFormatter(streams[0].formatter)
    for handler in streams:
        root.removeHandler(handler)
    root.addHandler(routed)
    try:
        yield
    finally:
        root.removeHandler(routed)
        for handler in streams:
            root.addHandler(handler)
