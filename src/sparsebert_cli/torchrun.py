"""torchrun, less its traceback when a rank fails or it is stopped: each rank prints its own
error line, and the job that started torchrun reads the run's manifest and says in one line
what failed or where to resume (`launch.relaunch_distributed`). `python -m sparsebert_cli.torchrun
<torchrun arguments>`."""

import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ChildFailedError:
        sys.exit(1)
    except SignalException as stop:  # the ranks were stopped (and waited for) on the way here
        sys.exit(128 + int(stop.sigval))
