"""The settings in which configs differ, as `model.hidden_size: 128 | 64` (the report's mixed
cells, a run folder refused for another config)."""

import json
from typing import Any


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    found: dict[str, Any] = {}
    for key, value in node.items():
        found.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def differences(configs: list[dict]) -> list[str]:
    """`model.hidden_size: 128 | 64` for every key whose value differs between `configs`; the
    keys naming a choice (`mask.name`) first, since they explain the others' differences."""
    flats = [_flat(c) for c in configs]
    keys = sorted(set().union(*flats), key=lambda k: (not k.endswith(".name"), k))
    shown = [[json.dumps(f.get(k), default=str) for f in flats] for k in keys]
    return [f"{k}: {' | '.join(v)}" for k, v in zip(keys, shown, strict=True) if len(set(v)) > 1]
