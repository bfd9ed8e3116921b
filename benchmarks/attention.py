"""Attention benchmarks (issue 8, items 3–5): the sparse backends against dense SDPA, side by side.

attention: forward and forward+backward time of `block_sparse`, `flex` (forward only on CPU) and
    what `auto` picks, against dense `F.scaled_dot_product_attention` (no mask: the speed to beat),
    for the shipped patterns (conf/mask/*.yaml, sized for n = 128 and kept at that width for longer
    sequences), a DAM_s-like band and a random unstructured mask, with the block density and the
    ideal speed-up 1/density beside the measured one.
memory: peak memory of forward+backward at n = 4096 with a window mask, block_sparse against
    dense masked attention (the `masked` reference and the `sdpa` backend with the boolean mask),
    each with what it keeps from the mask between calls (sdpa's float mask, block_sparse's tables and
    per-tile biases).
scaling: forward+backward time against n for the fixed-width window mask, block_sparse and dense
    SDPA, with the fitted exponent of t ∝ n^k and a log–log plot.
block_dam: a block DAM searched by the CLI at n = 2048 (demo model, 30 steps, target sparsity
    0.9), then its block_sparse forward+backward against dense SDPA (issue 15).

    python -m benchmarks attention|memory|scaling|block_dam [--quick] [--device cpu|cuda]
"""

import dataclasses
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.harness import (
    RESULTS_DIR,
    check,
    compare,
    load_conf,
    markdown_table,
    peak_memory,
    result_stem,
)

DIM = 64  # head dimension (BERT)
MASK_NAMES = ("window", "longformer", "bigbird", "star", "logsparse", "dam_s", "random")
DAM_S_WIDTH = 16  # the DAM_s-like band keeps distances 1..16: no diagonal (the paper's finding)
# n → (batch, heads, rounds): batch × heads shrink with n so dense n = 8192 fits the time budget;
# never below 2 heads: SDPA's CPU backward parallelises over batch × heads (1 head = 1 thread).
SHAPES = {128: (8, 8, 7), 512: (4, 4, 5), 2048: (1, 4, 5), 8192: (1, 2, 3)}
QUICK_SHAPES = {128: (2, 2, 2), 512: (1, 2, 2), 2048: (1, 2, 2)}
SPARSE_MIN_N, SPARSE_MAX_DENSITY, SPARSE_TARGET = 2048, 0.1, 0.5  # ≥ 50 % of ideal at ≥ 90 %
SHORT_N, SHORT_TARGET = 128, 1.2  # at n = 128, auto no slower than 1.2 × dense
MEMORY_N, MEMORY_SHAPE, MEMORY_TARGET = 4096, (1, 2), 0.3
SCALING_NS, SCALING_SHAPE = (512, 1024, 2048, 4096, 8192), (1, 2)
SCALING_TARGETS = {"block_sparse": (0.8, 1.2), "dense_sdpa": (1.8, 2.2)}


def block_size() -> int:
    """The model's default block size (ModelConfig.block_size), so the figures are what users get."""
    from sparsebert_cli.config import ModelConfig

    return ModelConfig().block_size


def build_mask(name: str, n: int, heads: int) -> torch.Tensor:
    """M as bool [heads, n, n]: a shipped pattern config, or the DAM_s-like band."""
    from sparsebert_cli.masks.config import MaskConfig
    from sparsebert_cli.masks.dam import DAM
    from sparsebert_cli.masks.patterns import pattern_mask

    if name == "dam_s":
        dam = DAM(heads, n, structure="structured", init=-1.0)
        with torch.no_grad():
            dam.alpha[..., 1 : DAM_S_WIDTH + 1] = 1.0  # α > 0 ⇒ kept after binarisation
        return dam.binarize()[0]
    return pattern_mask(load_conf("mask", name, MaskConfig), n, heads)


def _inputs(batch: int, heads: int, n: int, device: torch.device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return [
        torch.randn(batch, heads, n, DIM, generator=g).to(device).requires_grad_() for _ in range(3)
    ]


def _backends(q, k, v, mask: torch.Tensor, bs: int) -> dict:
    """name → callable returning the attention output, for one mask (dense SDPA excluded)."""
    from sparsebert_cli.attention.block_sparse import block_layout, block_sparse_attention
    from sparsebert_cli.attention.flex import flex_block_mask, flex_sparse_attention
    from sparsebert_cli.attention.masked import build_sdpa_mask, masked_attention, sdpa_attention

    scale = DIM**-0.5
    layout = block_layout(mask, bs)  # built once per mask, as AttentionMask caches them
    prepared = build_sdpa_mask(mask, q.dtype)
    block_mask = flex_block_mask(mask, None, bs)
    return {
        "block_sparse": lambda: block_sparse_attention(q, k, v, layout, None, scale),
        "flex": lambda: flex_sparse_attention(*_grad_or_detached(q, k, v), block_mask, scale),
        "sdpa": lambda: sdpa_attention(q, k, v, mask, None, scale, prepared=prepared),
        "masked": lambda: masked_attention(q, k, v, mask, None, scale),
        "_layout": layout,
        "_prepared": prepared,
    }


def kept_bytes(kept: object, mask: torch.Tensor) -> int:
    """Bytes of the tensors a backend keeps from M between calls (`kept`: its layout or prepared
    mask, walked through dataclass fields, lists and dicts), M's own storage excluded."""
    seen, total = {mask.untyped_storage().data_ptr()}, 0
    pending = [kept]
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif dataclasses.is_dataclass(item):
            pending += [getattr(item, f.name) for f in dataclasses.fields(item)]
        elif isinstance(item, list | tuple):
            pending += item
        elif isinstance(item, dict):
            pending += item.values()
    return total


def _grad_or_detached(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """FlexAttention refuses inputs that require grad on CPU, even under no_grad."""
    return tensors if torch.is_grad_enabled() else tuple(t.detach() for t in tensors)


def _dense(q, k, v):
    return lambda: F.scaled_dot_product_attention(q, k, v)


def _forward(run):
    def forward():
        with torch.no_grad():
            return run()

    return forward


def _forward_backward(run):
    return lambda: run().sum().backward()


def _auto(mask: torch.Tensor, bs: int) -> str:
    from sparsebert_cli.attention.interface import AttentionMask, choose_backend

    return choose_backend(AttentionMask(mask[None]), 0, bs, 0.0)[0]


# --- item 3: time against sparsity ---------------------------------------------------------------


def _length_rows(n: int, shape: tuple, device: torch.device, bs: int) -> tuple[list, dict]:
    batch, heads, rounds = shape
    q, k, v = _inputs(batch, heads, n, device)
    flex_grad = device.type == "cuda"  # FlexAttention has no backward on CPU (torch 2.13)
    info, fwd, fwdbwd = {}, {"dense": _forward(_dense(q, k, v))}, {}
    fwdbwd["dense"] = _forward_backward(_dense(q, k, v))
    for name in MASK_NAMES:
        mask = build_mask(name, n, heads).to(device)
        runs = _backends(q, k, v, mask, bs)
        auto = dict.fromkeys(("fwd", "fwdbwd"), _auto(mask, bs))
        info[name] = {
            "block_density": runs["_layout"].block_density,
            "scored_fraction": runs["_layout"].scored_fraction,
            "sparsity": 1 - mask.float().mean().item(),
            "auto": auto,
        }
        for backend in {"block_sparse", "flex", auto["fwd"]}:
            fwd[f"{backend}:{name}"] = _forward(runs[backend])
        for backend in {"block_sparse", auto["fwdbwd"]} | ({"flex"} if flex_grad else set()):
            fwdbwd[f"{backend}:{name}"] = _forward_backward(runs[backend])
    timings = {
        "fwd": compare(fwd, device, rounds),
        "fwdbwd": compare(fwdbwd, device, rounds),
    }
    rows = []
    for name in MASK_NAMES:
        row = {"n": n, "batch": batch, "heads": heads, "mask": name, **info[name]}
        row["ideal_speedup"] = 1 / row["block_density"]
        row["kernel_ideal_speedup"] = 1 / row["scored_fraction"]  # of the entries it scores
        for pass_, measured in timings.items():
            dense = measured["dense"]["median_s"]
            row[f"dense_{pass_}_s"] = dense
            for backend in ("block_sparse", "flex", "auto"):
                key = f"{info[name]['auto'][pass_] if backend == 'auto' else backend}:{name}"
                if key in measured:
                    row[f"{backend}_{pass_}_s"] = measured[key]["median_s"]
                    row[f"{backend}_{pass_}_speedup"] = dense / measured[key]["median_s"]
        rows.append(row)
    return rows, timings


# auto's density threshold (interface.AUTO_MAX_BLOCK_DENSITY): block_sparse against SDPA with the
# mask on masks of randomly kept tiles, the worst layout for block_sparse, fwd+bwd over dense.
CROSSOVER = {"densities": (0.3, 0.45, 0.6), "shapes": {1024: (1, 4, 5), 4096: (1, 2, 5)}}
CROSSOVER_QUICK = {"densities": (0.45,), "shapes": {512: (1, 2, 2)}}


def scattered_tiles(n: int, heads: int, bs: int, density: float) -> torch.Tensor:
    """bool [heads, n, n]: each bs × bs tile kept with probability `density` (seeded), plus the
    diagonal tiles, so every query keeps a key."""
    blocks = math.ceil(n / bs)
    tiles = torch.rand(heads, blocks, blocks, generator=torch.Generator().manual_seed(0)) < density
    tiles |= torch.eye(blocks, dtype=torch.bool)
    return tiles.repeat_interleave(bs, 1).repeat_interleave(bs, 2)[:, :n, :n]


def _crossover_rows(device: torch.device, quick: bool, bs: int) -> list[dict]:
    settings = CROSSOVER_QUICK if quick else CROSSOVER
    rows = []
    for n, (batch, heads, rounds) in settings["shapes"].items():
        q, k, v = _inputs(batch, heads, n, device)
        candidates, found = {"dense": _forward_backward(_dense(q, k, v))}, {}
        for density in settings["densities"]:
            mask = scattered_tiles(n, heads, bs, density).to(device)
            runs = _backends(q, k, v, mask, bs)
            found[density] = (runs["_layout"].block_density, _auto(mask, bs))
            for backend in ("block_sparse", "sdpa"):
                candidates[f"{backend}:{density}"] = _forward_backward(runs[backend])
        timings = compare(candidates, device, rounds)
        dense = timings["dense"]["median_s"]
        for density, (block_density, auto) in found.items():
            row = {"n": n, "batch": batch, "heads": heads, "block_density": block_density}
            for backend in ("block_sparse", "sdpa"):
                row[f"{backend}_speedup"] = dense / timings[f"{backend}:{density}"]["median_s"]
            rows.append({**row, "auto": auto})
            print(f"  crossover n={n:5d} block density {block_density:.2f}: fwd+bwd block_sparse "
                  f"×{row['block_sparse_speedup']:.2f}, sdpa with the mask ×{row['sdpa_speedup']:.2f}"
                  f", auto → {auto}", flush=True)  # fmt: skip
    return rows


def run_attention(device: torch.device, quick: bool) -> dict:
    bs = block_size()
    rows, raw = [], {}
    for n, shape in (QUICK_SHAPES if quick else SHAPES).items():
        length_rows, raw[str(n)] = _length_rows(n, shape, device, bs)
        for row in length_rows:
            print(
                f"  n={n:5d} {row['mask']:10s} block density {row['block_density']:.3f} "
                f"(ideal ×{row['ideal_speedup']:.1f})  fwd+bwd: block_sparse "
                f"×{row['block_sparse_fwdbwd_speedup']:.2f}, auto→{row['auto']['fwdbwd']} "
                f"×{row['auto_fwdbwd_speedup']:.2f}  fwd: flex ×{row['flex_fwd_speedup']:.2f}",
                flush=True,
            )
        rows += length_rows
    checks = _attention_checks(rows)
    crossover = _crossover_rows(device, quick, bs)
    header = ["n", "B×H", "mask", "block density", "ideal ×", "bs fwd ×", "flex fwd ×"]
    header += ["auto fwd", "bs fwd+bwd ×", "auto fwd+bwd", "dense fwd+bwd ms"]
    table = [
        [
            r["n"],
            f"{r['batch']}×{r['heads']}",
            r["mask"],
            r["block_density"],
            r["ideal_speedup"],
            r["block_sparse_fwd_speedup"],
            r["flex_fwd_speedup"],
            f"{r['auto']['fwd']} ×{r['auto_fwd_speedup']:.2f}",
            r["block_sparse_fwdbwd_speedup"],
            f"{r['auto']['fwdbwd']} ×{r['auto_fwdbwd_speedup']:.2f}",
            1000 * r["dense_fwdbwd_s"],
        ]
        for r in rows
    ]
    details = (
        f"Speed-ups over dense `F.scaled_dot_product_attention` (no mask), head dim {DIM}, block "
        f"size {bs}; ideal = 1 / block density; bs = block_sparse; auto = the backend "
        "`choose_backend` picks.\n\n"
        + markdown_table(header, table)
        + "\n\n`auto`'s density threshold: masks of randomly kept tiles (plus the diagonal tiles), "
        "fwd+bwd speed-up over dense:\n\n"
        + markdown_table(
            ["n", "B×H", "block density", "block_sparse ×", "sdpa with the mask ×", "auto"],
            [
                [
                    r["n"],
                    f"{r['batch']}×{r['heads']}",
                    r["block_density"],
                    r["block_sparse_speedup"],
                    r["sdpa_speedup"],
                    r["auto"],
                ]
                for r in crossover
            ],
        )
    )
    setup = {"shapes": QUICK_SHAPES if quick else SHAPES, "head_dim": DIM, "block_size": bs,
             "crossover": CROSSOVER_QUICK if quick else CROSSOVER}  # fmt: skip
    return {"setup": setup, "rows": rows, "crossover": crossover, "timings": raw, "checks": checks,
            "details_md": details}  # fmt: skip


def _attention_checks(rows: list[dict]) -> list[dict]:
    checks = []
    for r in rows:
        if r["n"] >= SPARSE_MIN_N and r["block_density"] <= SPARSE_MAX_DENSITY:
            measured, ideal = r["block_sparse_fwdbwd_speedup"], r["ideal_speedup"]
            # the ideal (1 / block density); a kernel that scores fewer entries than
            # the tiles (pieces, diagonals) has a higher one of its own, said beside it
            own = r["kernel_ideal_speedup"]
            checks.append(
                check(
                    f"block_sparse fwd+bwd speed-up / ideal, {r['mask']} n={r['n']}",
                    measured / ideal,
                    "≥",
                    SPARSE_TARGET,
                    f"×{measured:.1f} of ideal ×{ideal:.1f}; {measured / own:.2f} of ×{own:.1f} "
                    "for the entries its kernel scores",
                )
            )
    for pass_, label in (("fwd", "fwd"), ("fwdbwd", "fwd+bwd")):
        short = [r for r in rows if r["n"] == SHORT_N]
        if short:
            worst = min(short, key=lambda r: r[f"auto_{pass_}_speedup"])
            checks.append(
                check(
                    f"auto {label} time / dense at n={SHORT_N} (worst mask)",
                    1 / worst[f"auto_{pass_}_speedup"],
                    "≤",
                    SHORT_TARGET,
                    f"worst: {worst['mask']}, auto → {worst['auto'][pass_]}",
                )
            )
    return checks


# --- item 4: memory ------------------------------------------------------------------------------


def run_memory(device: torch.device, quick: bool) -> dict:
    n = 1024 if quick else MEMORY_N
    batch, heads = MEMORY_SHAPE
    bs = block_size()
    q, k, v = _inputs(batch, heads, n, device)
    mask = build_mask("window", n, heads).to(device)
    runs = _backends(q, k, v, mask, bs)
    candidates = {name: runs[name] for name in ("block_sparse", "sdpa", "masked")}
    candidates["dense_sdpa"] = _dense(q, k, v)
    calls, kept = {}, {}
    for name, run in candidates.items():
        step = _forward_backward(run)
        step()  # warm-up: first-call allocations (thread pools, kernels) are not the method's
        q.grad = k.grad = v.grad = None
        calls[name] = peak_memory(step, device)
        q.grad = k.grad = v.grad = None
    # What each keeps from the mask (built once per mask and layer, so outside the call's peak);
    # after the calls, so block_sparse's float biases per dtype are built.
    kept["block_sparse"] = kept_bytes(runs["_layout"], mask)
    kept["sdpa"] = kept_bytes(runs["_prepared"], mask)
    peaks = {name: calls[name] + kept.get(name, 0) for name in candidates}
    checks = [
        check(
            f"block_sparse / {peer} peak memory, fwd+bwd, window n={n}",
            peaks["block_sparse"] / peaks[peer],
            "≤",
            MEMORY_TARGET,
            f"{peaks['block_sparse'] / 2**20:.1f} MiB vs {peaks[peer] / 2**20:.1f} MiB",
        )
        for peer in ("masked", "sdpa")
    ]
    rows = [
        [name, calls[name] / 2**20, kept.get(name, 0) / 2**20, peak / 2**20, peak / peaks["masked"]]
        for name, peak in peaks.items()
    ]
    details = (
        "Memory of one forward+backward: the most bytes held during the call (the inputs and the "
        "boolean mask excluded) plus what the backend keeps from the mask between calls, built "
        "once per mask and layer (sdpa: its float mask, one head's when the heads are alike, "
        "and its empty-row tables; block_sparse: its block tables and per-tile biases); "
        f"n = {n}, batch {batch} × {heads} heads, head dim {DIM}, window mask "
        f"(block density {runs['_layout'].block_density:.3f}, block size {bs}). masked = the "
        "exact reference backend, sdpa = the `sdpa` backend (boolean mask), dense_sdpa = SDPA "
        "without a mask (fused, no n × n tensor; for context).\n\n"
        + markdown_table(["backend", "call peak MiB", "kept MiB", "total MiB", "× masked"], rows)
    )
    setup = {"n": n, "batch": batch, "heads": heads, "head_dim": DIM, "block_size": bs}
    setup["method"] = (
        "torch.profiler CPU allocator events"
        if device.type == "cpu"
        else ("torch.cuda.max_memory_allocated")
    )
    setup["block_density"] = runs["_layout"].block_density
    return {
        "setup": setup,
        "peak_bytes": peaks,
        "call_peak_bytes": calls,
        "kept_bytes": kept,
        "checks": checks,
        "details_md": details,
    }


# --- item 5: scaling -----------------------------------------------------------------------------


def fitted_exponent(ns: list[int], seconds: list[float]) -> float:
    """k of t ∝ n^k: the least-squares slope of log t against log n."""
    x = [math.log(n) for n in ns]
    y = [math.log(t) for t in seconds]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum(
        (a - mx) ** 2 for a in x
    )


def run_scaling(device: torch.device, quick: bool) -> dict:
    ns = (256, 512, 1024, 2048) if quick else SCALING_NS
    batch, heads = SCALING_SHAPE
    bs = block_size()
    rounds = 2 if quick else 3
    series: dict[str, list[float]] = {"block_sparse": [], "dense_sdpa": []}
    raw = {}
    for n in ns:
        q, k, v = _inputs(batch, heads, n, device)
        runs = _backends(q, k, v, build_mask("window", n, heads).to(device), bs)
        raw[str(n)] = compare(
            {
                "block_sparse": _forward_backward(runs["block_sparse"]),
                "dense_sdpa": _forward_backward(_dense(q, k, v)),
            },
            device,
            rounds,
        )
        for name in series:
            series[name].append(raw[str(n)][name]["median_s"])
        print(
            f"  n={n:5d} fwd+bwd block_sparse {1000 * series['block_sparse'][-1]:.1f} ms, "
            f"dense {1000 * series['dense_sdpa'][-1]:.1f} ms",
            flush=True,
        )
    exponents = {name: fitted_exponent(list(ns), t) for name, t in series.items()}
    checks = [
        check(
            f"fitted exponent of fwd+bwd time vs n, {name}"
            + (" (window)" if name != "dense_sdpa" else ""),
            exponents[name],
            "in",
            SCALING_TARGETS[name],
        )
        for name in series
    ]
    plot = RESULTS_DIR / f"{result_stem('scaling', device)}.png"
    _plot(list(ns), series, exponents, plot, device)
    rows = [
        [n, 1000 * series["block_sparse"][i], 1000 * series["dense_sdpa"][i]]
        for i, n in enumerate(ns)
    ]
    details = (
        f"Forward+backward, batch {batch} × {heads} heads, head dim {DIM}, window mask of fixed "
        f"width (conf/mask/window.yaml), block size {bs}. Fitted exponents: "
        + ", ".join(f"{k} {v:.2f}" for k, v in exponents.items())
        + f". Plot: {plot.name}.\n\n"
        + markdown_table(["n", "block_sparse ms", "dense SDPA ms"], rows)
    )
    setup = {"ns": list(ns), "batch": batch, "heads": heads, "head_dim": DIM, "block_size": bs}
    return {
        "setup": setup,
        "seconds": series,
        "exponents": exponents,
        "timings": raw,
        "plot": plot.name,
        "checks": checks,
        "details_md": details,
    }


def _plot(ns, series, exponents, path, device) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, seconds in series.items():
        ax.loglog(
            ns, [1000 * t for t in seconds], "o-", label=f"{name} (k = {exponents[name]:.2f})"
        )
    ax.set_xlabel("sequence length n")
    ax.set_ylabel("forward+backward time (ms)")
    ax.set_title(f"Attention time against n, window mask ({device.type})")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    from benchmarks.__main__ import main

    main(["attention", *sys.argv[1:]])


# --- a searched block DAM at long n (issue 15) ---------------------------------------------------

BLOCK_DAM = {
    "n": 2048, "steps": 30, "target": 0.9, "shape": (1, 4, 7), "block_sizes": (32, 64, 128)
}  # fmt: skip
BLOCK_DAM_QUICK = {"n": 256, "steps": 2, "target": 0.75, "shape": (1, 2, 2), "block_sizes": (32,)}


def _search_block_dam(
    settings: dict, bs: int, workdir: Path, device: torch.device
) -> tuple[Path, float]:
    """`sparsebert search mask=dam_block model.block_size=bs` on the demo model at n (a real CLI
    run in a scratch runs folder): the mask a user gets. Returns its run folder and the search's
    wall time."""
    n = settings["n"]
    args = [
        "search", "experiment=demo", "mask=dam_block", f"data.seq_len={n}", f"mask.seq_len={n}",
        f"model.max_position_embeddings={n}", f"model.block_size={bs}", "mask.lam=0",
        f"mask.target_sparsity={settings['target']}", f"trainer.max_steps={settings['steps']}",
        "trainer.batch_size=2", f"trainer.device={device.type}", f"run_id=block_dam_{bs}",
    ]  # fmt: skip
    env = {**os.environ, "SPARSEBERT_RUNS_DIR": str(workdir / "runs"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}  # fmt: skip
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sparsebert_cli.cli", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return workdir / "runs" / "search" / f"block_dam_{bs}", time.perf_counter() - start


def run_block_dam(device: torch.device, quick: bool) -> dict:
    """A block DAM searched at n = 2048 at each block size, then its block_sparse forward+backward
    against dense SDPA: the speed-up should reach half of the ideal 1 / block density."""
    from sparsebert_cli.masks.artifact import load_mask

    settings = BLOCK_DAM_QUICK if quick else BLOCK_DAM
    n, (batch, heads, rounds) = settings["n"], settings["shape"]
    q, k, v = _inputs(batch, heads, n, device)
    candidates, searched = {"dense": _forward_backward(_dense(q, k, v))}, {}
    with tempfile.TemporaryDirectory() as workdir:
        for bs in settings["block_sizes"]:
            run_dir, search_s = _search_block_dam(settings, bs, Path(workdir), device)
            mask, meta = load_mask(run_dir / "artifacts")
            runs = _backends(q, k, v, mask[0, :heads].to(device), bs)
            candidates[f"block_sparse:{bs}"] = _forward_backward(runs["block_sparse"])
            searched[bs] = {"search_s": search_s, "mask_sparsity": meta["sparsity"]["overall"],
                            "block_density": runs["_layout"].block_density}  # fmt: skip
    timings = compare(candidates, device, rounds)
    checks, rows = [], []
    for bs, found in searched.items():
        density = found["block_density"]
        speedup = timings["dense"]["median_s"] / timings[f"block_sparse:{bs}"]["median_s"]
        print(f"  searched block DAM n={n}, block size {bs}: sparsity "
              f"{found['mask_sparsity']:.1f} %, block density {density:.3f}, fwd+bwd "
              f"×{speedup:.2f} (ideal ×{1 / density:.1f}); search {found['search_s']:.0f} s",
              flush=True)  # fmt: skip
        checks.append(
            check(
                f"searched block DAM: block_sparse fwd+bwd speed-up / ideal, n={n}, block size {bs}",
                speedup / (1 / density),
                "≥",
                SPARSE_TARGET,
                f"×{speedup:.1f} of ideal ×{1 / density:.1f}",
            )
        )
        rows.append([bs, found["mask_sparsity"], density, found["search_s"]])
    details = (
        f"`sparsebert search experiment=demo mask=dam_block data.seq_len={n} "
        f"model.block_size=<block size> mask.lam=0 mask.target_sparsity={settings['target']} "
        f"trainer.max_steps={settings['steps']} trainer.batch_size=2`, then the first {heads} "
        f"heads of its mask; forward+backward of B×H = {batch}×{heads}, head dim {DIM}.\n\n"
        + markdown_table(["block size", "mask sparsity %", "block density", "search s"], rows)
        + "\n\n"
        + markdown_table(
            ["pass", "median s", "min–max s"],
            [
                [name, t["median_s"], f"{t['min_s']:.3f}–{t['max_s']:.3f}"]
                for name, t in timings.items()
            ],
        )
    )
    setup = {**settings, "head_dim": DIM, "searched": searched}
    return {"setup": setup, "timings": timings, "checks": checks, "details_md": details}
