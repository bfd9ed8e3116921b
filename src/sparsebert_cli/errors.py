"""The one exception type for user mistakes: its message is shown as one paragraph, no traceback."""


class SparseBertError(Exception):
    """A problem the user can fix (bad config, missing upstream run, corrupt file, hub unreachable).

    The message names the bad value and says how to fix it; the CLI prints it and exits non-zero.
    """


class UnwritableError(OSError):
    """A file could not be written (`filename`: the path meant), as opposed to one that could not
    be read: a tool that both reads and writes tells the user which of the two failed."""


def first_line(error: BaseException, default: str = "") -> str:
    """The first line of an exception's message (libraries' messages run to many lines), or
    `default` when it has none."""
    return (str(error).strip().splitlines() or [default])[0]


def refuse(problem: str | None) -> None:
    """Raise SparseBertError(problem) when there is one (what the `*_problem` checks return)."""
    if problem is not None:
        raise SparseBertError(problem)


def require(ok: bool, message: str) -> None:
    """Raise SparseBertError(message) unless `ok`."""
    if not ok:
        raise SparseBertError(message)
