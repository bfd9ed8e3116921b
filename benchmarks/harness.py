"""Timing, peak memory, machine description, checks and result files shared by the benchmarks.

Every figure is a ratio against a peer measured in the same process: `compare` warms each
candidate up, then runs them in interleaved rounds (each round in its own seeded random order), so drift of a
shared machine hits all of them alike and no candidate is always timed right after the same one
(a rotating order kept the neighbours: the e2e suite's ceiling always ran after the dense or HF
model, the two that free the most memory); it reports the median and the min–max of the rounds.

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` above the bytes allocated before the call.
On CPU no allocator keeps a peak, and the process RSS is too coarse (the allocator keeps freed
pages), so `peak_memory` records every allocation and free of the call with torch.profiler
(`profile_memory=True`: the raw "[memory]" events of the CPU allocator, with their sizes) and
takes the peak of their running sum: the most bytes the call held at once, beyond what existed
before it (inputs, masks and block tables built beforehand are not counted).
"""

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CPU_THREADS = 2


def select_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when visible)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible; use --device cpu.")
    torch.set_num_threads(CPU_THREADS)  # the CPU figures are defined at 2 threads
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    candidates: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
) -> dict[str, dict]:
    """Seconds per call of each candidate: {name: {median_s, min_s, max_s, times_s}}.

    Each candidate runs `warmup` times (compilation, caches, allocator), then `repeats` rounds run
    every candidate once, each round in a random order (seeded: a rerun times the same orders).
    """
    names = list(candidates)
    order = random.Random(0)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in order.sample(names, len(names)):
            start = time.perf_counter()
            candidates[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: summarize(values) for name, values in times.items()}


def paired_ratio(timings: dict[str, dict], numerator: str, denominator: str) -> float:
    """Median over `compare`'s rounds of numerator's time / denominator's in the same round.

    Both ran within one round, next to each other, so a drift of the shared machine slower than a
    round cancels; a ratio of the two medians pairs a quiet minute of one with a busy one of the
    other (at n = 4096 in the e2e suite, the two dropout settings' identical ceiling models gave
    medians 16 % apart)."""
    pairs = zip(timings[numerator]["times_s"], timings[denominator]["times_s"], strict=True)
    return statistics.median(a / b for a, b in pairs)


def summarize(times: list[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
    }


def peak_memory(run: Callable[[], object], device: torch.device) -> int:
    """Most bytes held at once during `run()` beyond those allocated before it (see module doc)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    held = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        held += event.nbytes()  # negative for a free
        peak = max(peak, held)
    return peak


def machine(device: torch.device) -> dict:
    """What the numbers were measured on."""
    import transformers

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "device": device.type,
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return info


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


# --- checks and result files ---------------------------------------------------------------------


def check(name: str, value: float, op: str, bound: float | tuple[float, float], note: str = ""):
    """One line of `checks`: op is ≥, ≤ or 'in' (bound = (low, high))."""
    if op == "in":
        low, high = bound
        met, target = low <= value <= high, f"{low:g}–{high:g}"
    elif op == "≥":
        met, target = value >= bound, f"≥ {bound:g}"
    else:
        met, target = value <= bound, f"≤ {bound:g}"
    return {
        "name": name,
        "value": round(value, 3),
        "target": target,
        "met": bool(met),
        "note": note,
    }


def result_stem(name: str, device: torch.device) -> str:
    return name if device.type == "cpu" else f"{name}-{device.type}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def checks_table(checks: list[dict]) -> str:
    """The checks with their values as stored (three decimals): rounded to three significant
    digits, 1.799 would read 1.8 beside a missed target of 1.8–2.2."""
    rows = [
        [c["name"], f"{c['value']:g}", c["target"], c["met"], c.get("note", "")] for c in checks
    ]
    return markdown_table(["check", "value", "target", "met", "note"], rows)


def write_results(name: str, device: torch.device, payload: dict, details_md: str) -> Path:
    """benchmarks/results/<name>.json (checks, setup, raw timings, machine) and <name>.md."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = result_stem(name, device)
    path = RESULTS_DIR / f"{stem}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md = [
        f"# Benchmark: {name} ({device.type})",
        "",
        f"`{payload['command']}` on {describe(payload['machine'])}, {payload['wall_s']:.0f} s, "
        f"load average {payload['load_average']['start']:.1f} → {payload['load_average']['end']:.1f}.",
        "",
        checks_table(payload["checks"]),
        "",
        details_md,
        "",
    ]
    (RESULTS_DIR / f"{stem}.md").write_text("\n".join(md), encoding="utf-8")
    return path


def describe(info: dict) -> str:
    where = info.get("gpu") or f"{info['cpu']} ({info['cpu_cores']} cores)"
    return (
        f"{where}, {info['torch_threads']} torch threads, torch {info['torch']}, "
        f"transformers {info['transformers']}"
    )


def write_summary(device: torch.device, names: list[str]) -> Path:
    """summary.md: the checks of every suite's latest results file for this device. Results
    from more than one machine are not mixed silently: each suite's line then names its own."""
    sections, checks, machines = [], [], []
    for name in names:
        path = RESULTS_DIR / f"{result_stem(name, device)}.json"
        if not path.is_file():
            continue
        payload = json.loads(path.read_text(encoding="utf-8"))
        machines.append(describe(payload["machine"]))
        checks += [{**c, "name": f"{name}: {c['name']}"} for c in payload["checks"]]
        load = payload["load_average"]
        sections.append(
            f"- `{payload['command']}`: {payload['wall_s']:.0f} s, load average "
            f"{load['start']:.1f} → {load['end']:.1f} ({path.name})"
        )
    if len(set(machines)) > 1:
        header = (
            "Machines: the suites ran on different machines (named per suite); compare "
            "numbers within a suite only."
        )
        sections = [
            f"{line}, on {machine}" for line, machine in zip(sections, machines, strict=True)
        ]
    else:
        header = f"Machine: {machines[0] if machines else 'no results yet'}."
    met = sum(c["met"] for c in checks)
    text = [
        f"# Benchmark summary ({device.type})",
        "",
        header,
        "",
        *sections,
        "",
        f"{met} of {len(checks)} targets met.",
        "",
        checks_table(checks),
        "",
    ]
    path = RESULTS_DIR / f"{result_stem('summary', device)}.md"
    path.write_text("\n".join(text), encoding="utf-8")
    return path


def print_checks(checks: list[dict]) -> None:
    for c in checks:
        status = "met" if c["met"] else "MISSED"
        note = f"  ({c['note']})" if c.get("note") else ""
        print(f"  {c['name']}: {c['value']:g} (target {c['target']}) {status}{note}", flush=True)


def load_conf(group: str, name: str, schema):
    """conf/<group>/<name>.yaml merged onto its schema dataclass (a `defaults` list is dropped)."""
    from omegaconf import OmegaConf

    from sparsebert_cli.config import conf_dir

    node = OmegaConf.load(conf_dir() / group / f"{name}.yaml")
    node.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(schema), node)
