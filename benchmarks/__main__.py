"""Run the benchmarks: all of them (`make bench`), or some by name.

    python -m benchmarks [training|dam|dam_long|attention|memory|scaling|block_dam|e2e ...] [--quick] [--device cpu|cuda]

Each suite prints its ratios with their targets and writes benchmarks/results/<name>.json (the
`checks`, setup, raw timings, machine, command, wall time) and <name>.md; results/summary.md
collects the checks of every suite's latest run. On CUDA the files are <name>-cuda.*.
"""

import argparse
import json
import os
import shlex
import sys
import time

from benchmarks import attention, e2e, training
from benchmarks.harness import (
    machine,
    print_checks,
    select_device,
    write_results,
    write_summary,
)

SUITES = {
    "training": training.run_training,
    "dam": training.run_dam,
    "dam_long": training.run_dam_long,
    "attention": attention.run_attention,
    "memory": attention.run_memory,
    "scaling": attention.run_scaling,
    "block_dam": attention.run_block_dam,
    "e2e": e2e.run_e2e,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "suites", nargs="*", metavar="SUITE", help=f"{', '.join(SUITES)} (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke test, not figures"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    args = parser.parse_args(argv)
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = select_device(args.device)
    info = machine(device)
    names = args.suites or list(SUITES)
    start = time.perf_counter()
    all_checks = []
    for name in names:
        print(f"[{name}] on {device.type}, {info['torch_threads']} threads", flush=True)
        suite_start, load_start = time.perf_counter(), os.getloadavg()[0]
        result = SUITES[name](device, args.quick)
        details = result.pop("details_md")
        command = f"python -m benchmarks {name}" + (" --quick" if args.quick else "")
        if device.type != "cpu":
            command += f" --device {device.type}"
        payload = {
            "name": name,
            "checks": result.pop("checks"),
            "machine": info,
            "command": command,
            "invoked_as": shlex.join(["python", "-m", "benchmarks", *(argv or sys.argv[1:])]),
            "quick": args.quick,
            "wall_s": time.perf_counter() - suite_start,
            # 1-minute load average: above the thread count, other processes shared the cores.
            "load_average": {"start": load_start, "end": os.getloadavg()[0]},
            **result,
        }
        path = write_results(name, device, json.loads(json.dumps(payload, default=str)), details)
        print_checks(payload["checks"])
        print(f"  wrote {path} ({payload['wall_s']:.0f} s)", flush=True)
        all_checks += payload["checks"]
    summary = write_summary(device, list(SUITES))
    met = sum(c["met"] for c in all_checks)
    print(
        f"{met} of {len(all_checks)} targets met in {time.perf_counter() - start:.0f} s; "
        f"summary: {summary}",
        flush=True,
    )


if __name__ == "__main__":
    main()
