"""torchrun, less its traceback when a rank fails or it is stopped: each rank prints its own
error line, and the job that started torchrun reads the run's manifest and says in one line
what failed or where to resume (`launch.relaunch_distributed`). `python -m sparsebert_cli.torchrun
<torchrun arguments>`."""

import os
import sys
from pathlib import Path

# A file where a failed torchrun names the rank a signal killed first: the others then fail on
# their lost peer ("Connection reset by peer"), which is all the run's manifest can say.
KILLED_RANKS_ENV = "SPARSEBERT_KILLED_RANKS"


def _torchrun(argv: list[str]) -> int:
    """torchrun's exit status, with its own failures and stops turned into one."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    try:
        main(argv)
    except ChildFailedError as failed:
        _, first = failed.get_first_failure()  # torchrun then stops the others (SIGTERM)
        if first.exitcode < 0 and os.environ.get(KILLED_RANKS_ENV):
            said = f"rank {first.local_rank} was killed by {first.signal_name()}"
            Path(os.environ[KILLED_RANKS_ENV]).write_text(said, encoding="utf-8")
        return 1
    except SignalException as stop:  # the ranks were stopped (and waited for) on the way here
        return 128 + int(stop.sigval)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_torchrun(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C passed on before torchrun set its handlers (importing)
        sys.exit(130)
