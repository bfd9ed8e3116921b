"""Ctrl-C and SIGTERM: a job stops at the end of the current training step, never inside one.

`install` routes both signals to `Interrupted` (a BaseException, like KeyboardInterrupt, so no
`except Exception` swallows it). Inside `deferred()` (one optimiser step) a first signal is only
noted and `check()` raises it once the step is whole, so the checkpoint written on the way out
is exact; a second signal raises at once. The job then marks its run `interrupted` and exits
128 + the signal number (130 for Ctrl-C, 143 for SIGTERM). Signal handlers are process state by
nature: this module holds the one pending request.
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(BaseException):
    """A stop request (SIGINT or SIGTERM) on its way out of the job."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_pending: list[int] = []  # the signal noted inside a deferred block (at most one)
_deferring = threading.Event()


def _handle(signum: int, frame) -> None:
    if _deferring.is_set() and not _pending:
        _pending.append(signum)
        return
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM to `Interrupted` (only the main thread can install handlers)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _handle)


@contextmanager
def deferred() -> Iterator[None]:
    """Within this block a first stop request waits for `check()`."""
    _deferring.set()
    try:
        yield
    finally:
        _deferring.clear()


def check() -> None:
    """Raise the stop request noted during a deferred block, if any."""
    if _pending:
        raise Interrupted(_pending.pop())
