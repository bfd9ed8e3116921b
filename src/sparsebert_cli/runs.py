"""Run folders: the contract between stages.

A run folder `<runs_dir>/<stage>/<run_id>/` holds Hydra's `.hydra/`, the resolved `config.yaml`,
`manifest.json` (stage, status, inputs, outputs with sha256, versions, git sha, seed, timings) and
`metrics.json`. Every write is atomic (temp file + rename) and `status: completed` is written last,
so a consumer never takes a half-written run for a finished one. Torch-free.
"""

import hashlib
import json
import os
import platform
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from sparsebert_cli.errors import SparseBertError

MANIFEST = "manifest.json"
METRICS = "metrics.json"
CONFIG = "config.yaml"
STATUSES = ("running", "completed", "failed")
_VERSIONED = ("sparsebert-cli", "torch", "transformers", "datasets", "hydra-core", "tokenizers")


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` to create a temporary file beside `path`, then rename it onto `path`.

    Readers see the old file or the whole new one, never a part, even if the writer is killed.
    The temporary name keeps the suffix, so writers that infer a format from it (savefig) work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict:
    """Read a JSON object, with a clear error for a missing, truncated or corrupt file."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SparseBertError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SparseBertError(
            f"{path} is corrupt or truncated ({e}); delete the run folder and run its stage again."
        ) from None
    if not isinstance(obj, dict):
        raise SparseBertError(f"{path} does not hold a JSON object; it is not a sparsebert file.")
    return obj


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Content hash of a resolved config (or any JSON-able object): equal configs, equal hashes."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_manifest(run_dir: Path) -> dict | None:
    """The manifest of a run folder, or None when it has none yet."""
    path = Path(run_dir) / MANIFEST
    return read_json(path) if path.exists() else None


@dataclass
class Run:
    """A live run folder; only rank 0 of a distributed run writes (`writer=False` elsewhere)."""

    dir: Path
    manifest: dict
    writer: bool = True

    @property
    def stage(self) -> str:
        return self.manifest["stage"]

    @property
    def artifacts(self) -> Path:
        return self.dir / "artifacts"

    @classmethod
    def start(
        cls,
        run_dir: Path,
        stage: str,
        resolved_config: dict,
        chash: str,
        command: str,
        world_size: int = 1,
        writer: bool = True,
    ) -> "Run":
        run_dir = Path(run_dir).resolve()
        previous = load_manifest(run_dir) if writer else None
        manifest = {
            "stage": stage,
            "status": "running",
            "config_hash": chash,
            "command": command,
            "seed": resolved_config.get("seed"),
            "world_size": world_size,
            "inputs": {},
            "outputs": {},
            "versions": _versions(),
            "git_sha": _git_sha(),
            "host": platform.node(),
            "started_at": time.time(),
            "attempts": (previous or {}).get("attempts", 0) + 1,
        }
        run = cls(run_dir, manifest, writer)
        if writer:
            write_job_record(run_dir, command, resolved_config)
            run.save()
        return run

    def save(self) -> None:
        if self.writer:
            atomic_write_json(self.dir / MANIFEST, self.manifest)

    def add_input(self, name: str, run_dir: Path) -> None:
        """Record an upstream run this run consumed, with its config hash."""
        upstream = load_manifest(run_dir) or {}
        self.manifest["inputs"][name] = {
            "run_dir": str(Path(run_dir).resolve()),
            "stage": upstream.get("stage"),
            "config_hash": upstream.get("config_hash"),
        }
        self.save()

    def complete(self, metrics: dict[str, float]) -> None:
        """Write metrics and output hashes, then `status: completed` last."""
        if not self.writer:
            return
        atomic_write_json(self.dir / METRICS, metrics)
        outputs = {}
        if self.artifacts.exists():
            for path in sorted(p for p in self.artifacts.rglob("*") if p.is_file()):
                outputs[str(path.relative_to(self.dir))] = sha256_file(path)
        self.manifest["outputs"] = outputs
        self.manifest["finished_at"] = time.time()
        self.manifest["duration_s"] = round(
            self.manifest["finished_at"] - self.manifest["started_at"], 3
        )
        self.manifest["status"] = "completed"
        self.save()

    def fail(self, error: str) -> None:
        if not self.writer:
            return
        self.manifest.update(status="failed", error=error, finished_at=time.time())
        self.save()


def write_job_record(run_dir: Path, command: str, resolved_config: dict) -> None:
    """The job that owns this folder: its resolved `config.yaml` and `.hydra/overrides.yaml`.

    Written by us rather than by Hydra (`hydra.output_subdir: null`), so a job refused for a
    different config never overwrites the record of the run that is there.
    """
    atomic_write_text(Path(run_dir) / CONFIG, _to_yaml(resolved_config))
    overrides = _to_yaml(shlex.split(command)[2:])
    atomic_write_text(Path(run_dir) / ".hydra" / "overrides.yaml", overrides)


def _to_yaml(obj: dict | list) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(obj))


def iter_runs(runs_dir: Path, stage: str | None = None) -> Iterator[tuple[Path, dict]]:
    """Every run folder (with a readable manifest) under runs_dir, optionally of one stage."""
    root = Path(runs_dir) / stage if stage else Path(runs_dir)
    if not root.exists():
        return
    for path in sorted(root.rglob(MANIFEST)):
        try:
            manifest = read_json(path)
        except SparseBertError:
            continue
        if stage is None or manifest.get("stage") == stage:
            yield path.parent, manifest


def resolve(kind: str, ref: str, runs_dir: Path) -> Path:
    """The completed run folder of stage `kind` that `ref` names: a path, or "latest".

    Anything else (missing folder, another stage, a running or failed run) is refused with a
    message that lists the completed candidates.
    """
    runs_dir = Path(runs_dir)
    if ref == "latest":
        # Only folders that really lie under runs_dir: a symlink found there that leads
        # elsewhere is not followed (pass such a folder explicitly to use it).
        done = [
            (m.get("finished_at", 0), d)
            for d, m in iter_runs(runs_dir, kind)
            if m.get("status") == "completed" and inside(d, runs_dir)
        ]
        if not done:
            raise SparseBertError(
                f"no completed '{kind}' run under {runs_dir.resolve()} to use as 'latest'; run "
                f"`sparsebert {kind} ...` first, or pass a run folder explicitly."
            )
        return max(done)[1].resolve()
    run_dir = Path(ref).expanduser()
    manifest = load_manifest(run_dir) if run_dir.is_dir() else None
    problem = None
    if manifest is None:
        problem = f"{run_dir} is not a sparsebert run folder (no {MANIFEST})"
    elif manifest.get("stage") != kind:
        problem = f"{run_dir} is a '{manifest.get('stage')}' run, not a '{kind}' run"
    elif manifest.get("status") != "completed":
        problem = f"{run_dir} is not completed (status: {manifest.get('status')})"
    if problem:
        candidates = [
            str(d) for d, m in iter_runs(runs_dir, kind) if m.get("status") == "completed"
        ]
        listing = ", ".join(candidates[-5:]) if candidates else "none yet"
        raise SparseBertError(
            f"{problem}. Completed '{kind}' runs under {runs_dir}: {listing}. Pass one of them, "
            f"or 'latest'."
        )
    return run_dir.resolve()


def inside(path: Path, root: Path) -> bool:
    """Whether `path` lies inside `root` (used before following paths read from manifests)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def command_line(stage: str, overrides: list[str]) -> str:
    """The exact command that reruns a job."""
    return shlex.join(["sparsebert", stage, *overrides])
