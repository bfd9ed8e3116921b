"""`sparsebert masks`: the catalogue of fixed patterns with their sparsity and connectivity at n.

Each pattern is built from its preset conf/mask/<name>.yaml. The learnable `dam`/`dam_s` (random
at initialisation) and `from_run` (needs a run) are not listed. `--check` makes the exit status 1
when some listed mask misses a universal-approximation condition (PAPER.md §3) at --layers.
Torch is imported inside `main`, so importing this module stays instant.
"""

import argparse
import json

from sparsebert_cli.tools import positive_int


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sparsebert masks",
        description="Catalogue of attention mask patterns: sparsity, row density, connectivity.",
    )
    parser.add_argument("--seq-len", type=positive_int, default=128, help="sequence length n")
    parser.add_argument("--heads", type=positive_int, default=12, help="attention heads")
    parser.add_argument(
        "--layers", type=positive_int, default=12, help="layers L for the reachability check"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless every mask meets the universal-approximation conditions",
    )
    return parser.parse_args(argv)


def presets(names: list[str]) -> dict:
    """The `mask` config of each conf/mask/<name>.yaml, on top of the MaskConfig defaults."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sparsebert_cli.config import conf_dir
    from sparsebert_cli.masks.config import MaskConfig

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return {
            name: OmegaConf.merge(
                OmegaConf.structured(MaskConfig), compose(overrides=[f"+mask={name}"]).mask
            )
            for name in names
        }


def catalogue(n: int, heads: int, layers: int) -> list[dict]:
    """One row per fixed pattern, from its preset: name, params, sparsity (%), row density (%), connectivity."""
    from sparsebert_cli.masks.patterns import PATTERNS, pattern_mask, pattern_params
    from sparsebert_cli.masks.stats import connectivity, row_density, sparsity

    rows = []
    for name, cfg in presets(list(PATTERNS)).items():
        mask = pattern_mask(cfg, n, heads)[None]  # [1, H, n, n]: shared by all layers
        rows.append(
            {
                "name": name,
                "params": pattern_params(cfg),
                "sparsity": sparsity(mask),
                "row_density": row_density(mask),
                "connectivity": connectivity(mask, layers),
            }
        )
    return rows


def _passes(row: dict) -> bool:
    checks = row["connectivity"]
    return (
        checks["attends_other"]
        and checks["hamiltonian_path"] is True
        and checks["reaches_all_within_layers"]
    )


def _mark(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "unknown"}[value]


def print_table(rows: list[dict], n: int, heads: int, layers: int) -> None:
    from rich.box import SIMPLE
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Attention masks at n={n}, {heads} heads, {layers} layers", box=SIMPLE)
    table.add_column("mask", no_wrap=True)
    table.add_column("params", min_width=12)
    table.add_column("sparsity %", justify="right", no_wrap=True)
    table.add_column("row density %\nmin/mean/max", no_wrap=True)
    table.add_column("attends\nother", no_wrap=True)
    table.add_column("Hamilton\npath", no_wrap=True)
    table.add_column("reach\n(layers)", no_wrap=True)
    for row in rows:
        density, checks = row["row_density"], row["connectivity"]
        steps = checks["reach_layers"]
        table.add_row(
            row["name"],
            " ".join(f"{k}={v}" for k, v in row["params"].items()),
            f"{row['sparsity']:.2f}",
            f"{density['min']:.1f}/{density['mean']:.1f}/{density['max']:.1f}",
            _mark(checks["attends_other"]),
            _mark(checks["hamiltonian_path"]),
            ("never" if steps is None else str(steps))
            + ("" if checks["reaches_all_within_layers"] else f" (> {layers})"),
        )
    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the table into 80 columns
        console = Console(width=140)
    console.print(table)


def main(argv: list[str]) -> int:
    """Run `sparsebert masks [--seq-len N] [--heads H] [--layers L] [--json] [--check]`."""
    args = parse_args(argv)
    rows = catalogue(args.seq_len, args.heads, args.layers)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, args.seq_len, args.heads, args.layers)
    if args.check:
        failing = [row["name"] for row in rows if not _passes(row)]
        if failing:
            if not args.json:
                print(f"universal-approximation conditions not met by: {', '.join(failing)}")
            return 1
    return 0
