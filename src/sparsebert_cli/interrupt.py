"""Ctrl-C, SIGTERM and SIGHUP: a job stops at the end of the current training step, never inside
one.

`install` routes these signals to `Interrupted` (a BaseException, like KeyboardInterrupt, so no
`except Exception` swallows it). Inside `deferred()` (one optimiser step) a first signal is only
noted and `check()` raises it once the step is whole, so the checkpoint written on the way out
is exact; a second signal raises at once. The job then marks its run `interrupted` and exits
128 + the signal number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP). Signal handlers are
process state by nature: this module holds the one pending request.

A rank of a distributed run holds every request (`install(hold=True)`): the training loop stops
all ranks after the same step (`pending`), since a rank that left on its own would leave the
others waiting in a collective; torchrun kills ranks that do not stop in time.
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
_holding = threading.Event()  # a distributed rank: requests are only noted


def _handle(signum: int, frame) -> None:
    if (_deferring.is_set() or _holding.is_set()) and not _pending:
        _pending.append(signum)
        return
    if not _holding.is_set():
        raise Interrupted(signum)


# Ctrl-C, kill or a scheduler's stop, and a closed terminal (an ssh session that ended)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install(hold: bool = False) -> None:
    """Route the STOP_SIGNALS to `Interrupted` (only the main thread can install handlers);
    `hold`: only note them, for the training loop to act on (`pending`: a distributed rank)."""
    if threading.current_thread() is threading.main_thread():
        if hold:
            _holding.set()
        for sig in STOP_SIGNALS:
            signal.signal(sig, _handle)


def pending() -> int | None:
    """The signal number of the noted stop request, if any."""
    return _pending[0] if _pending else None


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
