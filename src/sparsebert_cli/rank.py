"""What torchrun starts for each rank: `launch.rank_main`, imported inside the guard, so that a
Ctrl-C passed on while the rank still imports (torch, Hydra: seconds) ends it without a traceback.
`python -m sparsebert_cli.rank <run_dir> <command>`."""

import sys

if __name__ == "__main__":
    try:
        from sparsebert_cli.launch import rank_main

        sys.exit(rank_main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
