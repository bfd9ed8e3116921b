"""Run folders: the contract between stages.

A run folder `<runs_dir>/<stage>/<run_id>/` holds Hydra's `.hydra/`, the resolved `config.yaml`,
`manifest.json` (stage, status, inputs, outputs with sha256, versions, git sha, seed, timings) and
`metrics.json`. Every write is atomic (temp file + rename) and `status: completed` is written last,
so a consumer never takes a half-written run for a finished one. A job holds the folder's lock
(`.lock`, its owner in `.owner.json`) from start to end, so no two jobs ever share a folder.
Names that become folders are checked here (`check_name`). Torch-free.
"""

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from sparsebert_cli.errors import SparseBertError, UnwritableError
from sparsebert_cli.progress import say
from sparsebert_cli.user_paths import expand_path, path_is, user_path

MANIFEST = "manifest.json"
# metrics.json keys that several modules write or read (the stages' contract with the report)
HEADLINE = "eval/headline"  # a fine-tuning's score of its task (data/metrics.py: TASK_METRICS)
MASK_SPARSITY = "mask/sparsity"  # percent of entries masked out
MASK_SEQ_LEN = "mask/seq_len"  # the n the sparsity was measured at
MLM_LOSS = "eval/mlm_loss"  # held-out masked-LM loss and accuracy of a pre-training
MLM_ACCURACY = "eval/mlm_accuracy"
USES_ATTENTION = "eval/uses_attention"  # 1.0 when the model passed the attention gate
# A model folder's files, as Hugging Face names them (transformers.utils.SAFE_WEIGHTS_NAME and
# CONFIG_NAME; a test keeps them equal): the weights and the architecture.
WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "config.json"
METRICS = "metrics.json"
METRICS_LOG = "metrics.jsonl"  # every logged step and evaluation, one JSON object a line
CONFIG = "config.yaml"
LOCK = ".lock"
OWNER = ".owner.json"  # pid and host of the job that holds LOCK
LAUNCH_CONFIG = ".launch-config.yaml"  # what a distributed job hands to every rank
# A step's run folder inside a pipeline: <runs_dir>/<step>/PIPELINE_PREFIX<config hash>.
PIPELINE_PREFIX = "pipeline-"
# A training checkpoint folder (checkpoints/step-<N>): the weights, the optimiser's, scheduler's
# and loss scaler's state, and the loop's (step, data order).
CHECKPOINT_FILES = (WEIGHTS_FILE, "training_state.pt", "loop_state.json")
# The best evaluation's weights while a run trains (hooks.select), in the run folder; removed when
# the run completes, since its final weights are then in artifacts/ (one copy on disk).
BEST_WEIGHTS = "best_model.safetensors"
STATUSES = ("running", "completed", "failed", "interrupted")
DAMAGED = "damaged"  # the status `iter_runs` gives a run whose manifest cannot be read
# A rerun of the same config resumes these; in the order a report cell names them.
UNFINISHED = ("failed", "interrupted", "running")
# The word that names a stage's newest completed run wherever a run folder is asked for.
LATEST = "latest"
# <stage>/MULTIRUN_DIR/<sweep_name>/<job>: a sweep's folders (conf/hydra/default.yaml lays it out).
MULTIRUN_DIR = "multirun"
# Values that become one folder name: letters, digits and . _ - = , + (not first: . - = , +).
NAME_KEYS = ("run_id", "sweep_name")
# run_id values taken by a meaning of their own: LATEST could never name that run, and a folder
# MULTIRUN_DIR would hold the stage's sweeps inside a run.
RESERVED_RUN_IDS = (LATEST, MULTIRUN_DIR)
MAX_NAME = 100
_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._=,+-]{{0,{MAX_NAME - 1}}}")
# What a job may leave in a folder before its manifest exists (anything else: not a run folder);
# Hydra adds its job log, <stage>.log.
_OWN_BEFORE_MANIFEST = {LOCK, OWNER, LAUNCH_CONFIG, CONFIG, ".hydra"}
# Environment variables whose values are secrets: never written into a run folder or a log.
SECRET_NAME = re.compile(
    r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.I
)
_MIN_SECRET = 6  # shorter values ("1", "true") are not secrets and would redact too much


class FolderRefused(SparseBertError):
    """A run folder this job may not take (not a name, not a run, in use): it is left untouched."""


def secret_values() -> list[str]:
    """Values of secret-named environment variables (longest first)."""
    found = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= _MIN_SECRET}
    return sorted(found, key=len, reverse=True)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a config (or a string) with every secret value from the environment replaced by
    `<redacted>`: configs are written to config.yaml, W&B and the manifest's command."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {k: redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, "<redacted>")
    return obj


_VERSIONED = ("sparsebert-cli", "torch", "transformers", "datasets", "hydra-core", "tokenizers")


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` to create a temporary file beside `path`, then rename it onto `path`.

    Readers see the old file or the whole new one, never a part, even if the writer is killed.
    The temporary name keeps the suffix, so writers that infer a format from it (savefig) work.
    """
    path = Path(path)
    if path.is_dir():
        raise SparseBertError(
            f"{path} is a folder, so no file can be written in its place; give the path of a "
            "file (one inside that folder, or another name)."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SparseBertError(
            f"{path} cannot be written: {nearest_existing(path.parent)} is a file, not a folder; "
            "choose a path whose folders are folders."
        ) from None
    except OSError as error:  # a folder that cannot be made (permissions, a read-only place)
        raise UnwritableError(error.errno, error.strerror, str(path)) from error
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        write(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise UnwritableError(error.errno, error.strerror, str(path)) from error
    finally:
        if os.path.lexists(tmp):  # (unlink would fail again on a read-only file system)
            tmp.unlink()
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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
        raise SparseBertError(
            f"{path} is corrupt or truncated ({reason}); delete the run folder and run its stage "
            "again."
        ) from None
    except OSError as e:
        raise SparseBertError(f"{path} cannot be read ({e.strerror or e}).") from None
    if not isinstance(obj, dict):
        raise SparseBertError(f"{path} does not hold a JSON object; it is not a sparsebert file.")
    return obj


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def altered_outputs(run_dir: Path, manifest: dict) -> list[str]:
    """The outputs a completed run's manifest hashed that are missing or changed now."""
    return [
        name
        for name, digest in manifest["outputs"].items()
        if not (run_dir / name).is_file() or sha256_file(run_dir / name) != digest
    ]


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


PACKAGE_DIR = Path(__file__).resolve().parent


def git_sha(package: Path = PACKAGE_DIR) -> str | None:
    """The commit of the checkout this package runs from, or None: an installed wheel inside
    another git repository (a user's project with its venv) must not record that repo's HEAD."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=package,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.splitlines()  # a checkout path may hold spaces
    if out.returncode != 0 or len(lines) != 2:
        return None
    top, sha = lines
    return sha if Path(top).resolve() / "src" / package.name == package else None


# The manifest's fields and their JSON types (others are kept unchecked); None is always allowed.
_NUMBER = (int, float)
MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "stage": (str,),
    "status": (str,),
    "config_hash": (str,),
    "command": (str,),
    "seed": (int,),
    "world_size": (int,),
    "inputs": (dict,),
    "outputs": (dict,),
    "versions": (dict,),
    "git_sha": (str,),
    "host": (str,),
    "started_at": _NUMBER,
    "finished_at": _NUMBER,
    "duration_s": _NUMBER,
    "attempts": (int,),
    "error": (str,),
    "checkpoint": (str,),
}


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    return value is None or (isinstance(value, types) and not isinstance(value, bool))


def check_manifest(manifest: dict, path: Path) -> dict:
    """`manifest` when every known field has its type (and inputs/outputs their shapes), else a
    SparseBertError naming the first bad field. Absent or null inputs/outputs read as {}."""
    bad = next((k for k, t in MANIFEST_FIELDS.items() if not _typed(manifest.get(k), t)), None)
    if bad is None and manifest.get("status") not in (None, *STATUSES):
        bad = "status"
    if bad is None and manifest.get("stage") is None:
        bad = "stage"
    manifest = {**manifest, "inputs": manifest.get("inputs") or {},
                "outputs": manifest.get("outputs") or {}}  # fmt: skip
    if bad is None and not all(
        isinstance(v, dict) and isinstance(v.get("run_dir"), str)
        for v in manifest["inputs"].values()
    ):
        bad = "inputs"
    if bad is None and not all(isinstance(v, str) for v in manifest["outputs"].values()):
        bad = "outputs"
    if bad is not None:
        raise SparseBertError(
            f"{path} is damaged: its field '{bad}' has the wrong type or value "
            f"({str(manifest.get(bad))[:80]!r}); delete that run folder and run its stage again."
        )
    return manifest


def load_manifest(run_dir: Path) -> dict | None:
    """The (checked) manifest of a run folder, or None when it has none yet."""
    path = user_path(run_dir) / MANIFEST
    return check_manifest(read_json(path), path) if path_is(Path.exists, path) else None


def readable_manifest(run_dir: Path) -> dict | None:
    """The manifest of a run folder, or None when it has none or a damaged one: for readers
    that pass over what they cannot read (a listing, a report, a summary)."""
    try:
        return load_manifest(run_dir)
    except SparseBertError:
        return None


def a_run_of(stage: object) -> str:
    """ "a 'search' run", "an 'evaluate' run": a stage's run in a message."""
    article = "an" if str(stage)[:1] in tuple("aeiou") else "a"
    return f"{article} '{stage}' run"


def job_manifest(run_dir: Path) -> dict | None:
    """The manifest of the job that ran in `run_dir`, or None: no manifest, or the failed one of a
    job refused before it started (it has no config hash; its run_id is free again)."""
    manifest = load_manifest(run_dir)
    return None if manifest is not None and manifest.get("config_hash") is None else manifest


def read_metrics_log(run_dir: Path) -> list[dict]:
    """The JSON objects of a run's metrics.jsonl ([] when absent). A last line without its
    newline was cut short by a kill (or is being written) and is left out; any other line
    that is not JSON is damage, refused with its number."""
    path = Path(run_dir) / METRICS_LOG
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")[:-1]  # the part after the last newline is unfinished
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise SparseBertError(
                f"{path} line {number} is not JSON; the run's log is damaged (rerun its stage)."
            ) from None
        if isinstance(record, dict):
            records.append(record)
    return records


def read_metrics(run_dir: Path) -> dict:
    """metrics.json of a run ({} when absent): flat names mapped to numbers (or null/text)."""
    path = user_path(run_dir) / METRICS
    if not path_is(Path.exists, path):
        return {}
    metrics = read_json(path)
    bad = next((k for k, v in metrics.items() if not isinstance(v, int | float | str | None)), None)
    if bad is not None:
        raise SparseBertError(
            f"{path} is damaged: '{bad}' is not a number; delete that run folder and run its "
            "stage again."
        )
    return metrics


def check_name(key: str, value: Any) -> str:
    """`value` when it is one safe folder name, else a SparseBertError stating the rule."""
    text = "" if value is None else str(value)
    if not _NAME.fullmatch(text):
        raise FolderRefused(
            f"{key}={text[:120]!r} is not a usable folder name: {key} must be 1 to {MAX_NAME} "
            "letters, digits or . _ - = , + (starting with a letter, digit or _), with no '/', "
            f"not '.' or '..'. Use e.g. {key}=my-run-1."
        )
    if key == "run_id" and text in RESERVED_RUN_IDS:
        raise FolderRefused(
            f"run_id={text} is a word sparsebert reads otherwise ('{LATEST}': the newest "
            f"completed run; '{MULTIRUN_DIR}': the folder of a stage's sweeps); use another "
            "name, e.g. run_id=my-run-1."
        )
    return text


NAME_BYTES = 255  # the longest file name Linux and macOS file systems take (NAME_MAX)


def default_runs_dir() -> Path:
    """The runs folder when paths.runs_dir is not set (conf/paths/default.yaml reads the same
    variable, as oc.env does: set but empty is the launch folder itself): $SPARSEBERT_RUNS_DIR,
    else runs/ where sparsebert is launched."""
    from sparsebert_cli.config import PathsConfig

    return Path(os.environ.get("SPARSEBERT_RUNS_DIR", PathsConfig.runs_dir))


def nearest_existing(path: Path) -> Path:
    """`path` or its nearest ancestor that exists (a file there blocks the folders below it)."""
    path = Path(path).absolute()
    # os.path.exists: False, not PermissionError, under a folder this user cannot search
    return next(p for p in (path, *path.parents) if os.path.exists(p))


def check_runs_dir(value: Any) -> None:
    """Refuse a runs folder Hydra could not make (before it tries, with a traceback): a name
    longer than file systems take, a file in its place, or a place where no folder can be made
    (a hidden empty folder is made and removed there to find out), or none at all."""
    if not str(value).strip():
        raise FolderRefused(
            f"paths.runs_dir={str(value)!r} is empty: runs would land in the launch folder itself "
            "(<stage>/<run_id> beside your files, where `sparsebert ls` does not look); set "
            "paths.runs_dir=runs (the default) or another folder."
        )
    path = Path(expand_path(str(value)))
    long = next((p for p in path.parts if len(p.encode()) > NAME_BYTES), None)
    if long is not None:
        raise FolderRefused(
            f"paths.runs_dir={str(value)[:60]!r}…: its folder name {long[:20]!r}… is "
            f"{len(long.encode())} bytes long, and file systems take at most {NAME_BYTES}; use "
            "a shorter name, e.g. paths.runs_dir=runs."
        )
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise FolderRefused(
            f"paths.runs_dir={value}: {existing} is a file, not a folder; point paths.runs_dir "
            "at a folder (it is created if missing)."
        )
    # A probe, not os.access: root passes os.access everywhere, even in /proc or a read-only mount
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sparsebert-probe-", dir=existing))
    except OSError as error:
        raise FolderRefused(
            f"paths.runs_dir={value}: no folder can be made in {existing} ({error.strerror}: "
            "read-only, another user's or not a real folder); point paths.runs_dir at a "
            "writable folder, e.g. paths.runs_dir=$HOME/runs."
        ) from None


def check_run_folder(run_dir: Path) -> None:
    """Refuse a folder that holds files but no manifest: it is not a run, so it is not ours."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or (run_dir / MANIFEST).exists():
        return
    foreign = sorted(
        p.name
        for p in run_dir.iterdir()
        if p.name not in _OWN_BEFORE_MANIFEST and p.suffix != ".log" and not _leftover(p)
    )
    # the job holding the folder writes its manifest first: one that appeared while the folder
    # was listed (a concurrent pipeline's step starting) makes it a run
    if foreign and not (run_dir / MANIFEST).exists():
        raise FolderRefused(
            f"{run_dir} already exists and holds files ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}) but no {MANIFEST}, so it is not a sparsebert "
            "run folder and is left untouched; choose another run_id=<name> (or sweep_name=)."
        )


def _leftover(path: Path) -> bool:
    """A temporary file or folder that a killed writer left (atomic writes, checkpoints)."""
    return path.name.startswith(".") and (".tmp" in path.name or path.name.endswith(".deleting"))


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete what killed writers left in `run_dir` (call while holding its lock)."""
    found = [p for p in Path(run_dir).rglob(".*") if _leftover(p)]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def _owner(run_dir: Path) -> str:
    try:
        owner = json.loads((Path(run_dir) / OWNER).read_text(encoding="utf-8"))
        return f"pid {int(owner['pid'])}, host {str(owner['host'])[:80]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown, host unknown"


@contextmanager
def hold(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold the lock of `run_dir` for a whole job.

    When another job holds it: refuse with its pid and host, or (`wait`, for sweeps and pipeline
    steps, which then skip the completed folder) wait for it to end.
    """
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        if not wait:
            raise FolderRefused(
                f"{run_dir} is already running ({_owner(run_dir)}); wait for that job to end "
                "(rerun this command then to reuse or resume it), or choose another run_id=<name>."
            ) from None
        say(f"{run_dir} is in use ({_owner(run_dir)}): waiting.")
        lock.acquire(timeout=-1)
    try:
        atomic_write_json(
            run_dir / OWNER, {"pid": os.getpid(), "host": platform.node(), "since": time.time()}
        )
        yield
    finally:
        (run_dir / OWNER).unlink(missing_ok=True)
        lock.release()


def is_locked(run_dir: Path) -> bool:
    """Whether a live job holds the lock of `run_dir`."""
    from filelock import FileLock, Timeout

    lock_path = Path(run_dir) / LOCK
    if not lock_path.exists():
        return False
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def observed_status(run_dir: Path, manifest: dict) -> str | None:
    """The manifest's status, except `running` when no live job holds the run's lock: its job
    died before it could say so (SIGKILL, out of memory, a joblib sweep stopped with Ctrl-C), so
    it reads `interrupted`, which a rerun resumes (`unfinished_run`)."""
    status = manifest.get("status")
    if status == "running" and not is_locked(run_dir):
        return "interrupted"
    return status


@dataclass(frozen=True)
class Layout:
    """Where a run folder keeps what: the folder names live here, every module asks this."""

    dir: Path

    @property
    def artifacts(self) -> Path:
        """What the run hands on: a search's mask, the model folder, profiles."""
        return self.dir / "artifacts"

    @property
    def model(self) -> Path:
        """The save_pretrained folder a pretrain or finetune run hands on."""
        return self.artifacts / "model"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def overrides(self) -> Path:
        """The job's command-line overrides, where Hydra would write them."""
        return self.dir / ".hydra" / "overrides.yaml"

    @property
    def figures(self) -> Path:
        """Where `sparsebert report --figures / --occlusion` writes for the run."""
        return self.dir / "figures"

    @property
    def trace(self) -> Path:
        """A search's σ(α) snapshots, stacked into the artifacts when it completes."""
        return self.dir / "trace"

    @property
    def importance_trace(self) -> Path:
        """The stacked snapshots a completed search hands on."""
        return self.artifacts / "importance_trace.safetensors"

    @property
    def predictions(self) -> Path:
        """What `evaluate` predicted: <split>.jsonl, or SQuAD's official prediction files."""
        return self.dir / "predictions"

    @property
    def submission(self) -> Path:
        """The GLUE test-server files `evaluate` writes."""
        return self.predictions / "submission"

    @property
    def mask_stats(self) -> Path:
        """The per-head sparsity of the mask `evaluate` ran with."""
        return self.dir / "mask_stats.json"

    def outputs(self) -> list[Path]:
        """The files a completed run hands on, hashed into its manifest's `outputs`."""
        found = [self.mask_stats] if self.mask_stats.is_file() else []
        for root in (self.artifacts, self.predictions):
            if root.is_dir():
                found += [p for p in root.rglob("*") if p.is_file()]
        return sorted(found)


def layout(run_dir: Path | str) -> Layout:
    return Layout(Path(run_dir))


def sweep_of(run_dir: Path) -> str | None:
    """The sweep a run folder belongs to (`<stage>/multirun/<sweep>/<job>`, as
    conf/hydra/default.yaml lays out a multirun), else None."""
    return run_dir.parent.name if run_dir.parent.parent.name == MULTIRUN_DIR else None


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
        return layout(self.dir).artifacts

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
        if writer:
            remove_leftovers(run_dir)  # what an earlier, killed attempt left half written
        manifest = {
            "stage": stage,
            "status": "running",
            "config_hash": chash,
            "command": redact(command),
            "seed": resolved_config.get("seed"),
            "world_size": world_size,
            "inputs": {},
            "outputs": {},
            "versions": _versions(),
            "git_sha": git_sha(),
            "host": platform.node(),
            "started_at": time.time(),
            "attempts": ((previous or {}).get("attempts") or 0) + 1,
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
        self.manifest["outputs"] = {
            str(path.relative_to(self.dir)): sha256_file(path)
            for path in layout(self.dir).outputs()
        }
        self.manifest["finished_at"] = time.time()
        self.manifest["duration_s"] = round(
            self.manifest["finished_at"] - self.manifest["started_at"], 3
        )
        self.manifest["status"] = "completed"
        self.save()

    def fail(self, error: str) -> None:
        self._end(status="failed", error=error)

    def interrupt(self, signal_name: str, checkpoint: Path | None) -> None:
        """Mark the run `interrupted` with the checkpoint a rerun resumes from (None: step 0)."""
        checkpoint = None if checkpoint is None else str(checkpoint)
        self._end(status="interrupted", error=f"stopped by {signal_name}", checkpoint=checkpoint)

    def _end(self, **fields: object) -> None:
        """A run that ends without completing: its status and why, and when."""
        if self.writer:
            self.manifest.update(fields, finished_at=time.time())
            self.save()


def write_job_record(run_dir: Path, command: str, resolved_config: dict) -> None:
    """The job that owns this folder: its resolved `config.yaml` and `.hydra/overrides.yaml`.

    Written by us rather than by Hydra (`hydra.output_subdir: null`), so a job refused for a
    different config never overwrites the record of the run that is there.
    """
    atomic_write_text(Path(run_dir) / CONFIG, _to_yaml(redact(resolved_config)))
    overrides = _to_yaml(redact(shlex.split(command)[2:]))
    atomic_write_text(layout(run_dir).overrides, overrides)


def _to_yaml(obj: dict | list) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(obj))


def iter_runs(runs_dir: Path, stage: str | None = None) -> Iterator[tuple[Path, dict]]:
    """Every run folder (with a manifest) under runs_dir, optionally of one stage.

    A manifest that cannot be read or has wrong types is yielded as {"status": "damaged",
    "error": why} (under every stage), so listings mark it and go on.
    """
    root = user_path(runs_dir) / (stage or "")
    if not path_is(Path.is_dir, root):  # a name too long for the system is not there either
        return
    for path in sorted(root.rglob(MANIFEST)):
        try:
            manifest = check_manifest(read_json(path), path)
        except SparseBertError as e:
            manifest = {"status": DAMAGED, "error": str(e)}
        if stage is None or manifest.get("stage") in (stage, None):
            yield path.parent, manifest


def resolve(kind: str, ref: str, runs_dir: Path) -> Path:
    """The completed run folder of stage `kind` that `ref` names: a path, or "latest".

    Anything else (missing folder, another stage, a running or failed run) is refused with a
    message that lists the completed candidates.
    """
    runs_dir = Path(runs_dir)
    if ref == LATEST:
        # Only folders that really lie under runs_dir: a symlink found there that leads
        # elsewhere is not followed (pass such a folder explicitly to use it).
        done = [
            (m.get("finished_at") or 0, d)
            for d, m in iter_runs(runs_dir, kind)
            if m.get("status") == "completed" and inside(d, runs_dir)
        ]
        if not done:
            raise SparseBertError(
                f"no completed '{kind}' run under {runs_dir.resolve()} to use as 'latest'; run "
                f"`sparsebert {kind} ...` first, or pass a run folder explicitly."
            )
        return max(done)[1].resolve()
    run_dir = user_path(ref)
    manifest = load_manifest(run_dir) if path_is(Path.is_dir, run_dir) else None
    problem = None
    if manifest is None:
        problem = f"{run_dir} is not a sparsebert run folder (no {MANIFEST})"
    elif manifest.get("stage") != kind:
        problem = f"{run_dir} is {a_run_of(manifest.get('stage'))}, not {a_run_of(kind)}"
    elif manifest.get("status") != "completed":
        status = observed_status(run_dir, manifest)  # a killed job's `running` is interrupted
        resume = (
            f"; `sparsebert ls --show {run_dir}` prints the command that resumes it"
            if status in ("failed", "interrupted")
            else ""
        )
        problem = f"{run_dir} is not completed (status: {status}{resume})"
    if problem:
        done = [(d, m) for d, m in iter_runs(runs_dir, kind) if m.get("status") == "completed"]
        done.sort(key=lambda found: found[1].get("finished_at") or 0)  # the newest last
        listing = ", ".join(str(d) for d, _ in done[-5:]) if done else "none yet"
        if len(done) > 5:
            listing += f" (the 5 newest of {len(done)}; `sparsebert ls {kind}` lists them all)"
        raise SparseBertError(
            f"{problem}. Completed '{kind}' runs under {runs_dir}: {listing}. Pass one of them, "
            f"or 'latest'."
        )
    return run_dir.resolve()


def unfinished_run(runs_dir: Path, stage: str, chash: str) -> Path | None:
    """The newest run folder `<runs_dir>/<stage>/<name>` of this config that did not finish
    (interrupted, failed, or running with nobody holding its lock): a rerun resumes it."""
    found = [
        (m.get("started_at") or 0, d)
        for d, m in iter_runs(runs_dir, stage)
        if d.parent == Path(runs_dir) / stage
        and not d.name.startswith(PIPELINE_PREFIX)
        and m.get("config_hash") == chash
        and m.get("status") in UNFINISHED
        and not is_locked(d)
    ]
    return max(found)[1] if found else None


def relocated(recorded: str | Path, root: Path) -> Path:
    """A run folder as a manifest or config recorded it (absolute, on the machine and in the
    runs folder of then), found in the runs folder `root` of now: itself while it is there, else
    the longest tail of it that is a run folder under `root` (a runs folder moved, copied, or
    synced from a cluster, keeps its layout below it) — while the recorded folder still exists
    outside `root`, only a copy of it (the same run: config hash and start time) —, else itself."""
    path = Path(recorded)
    if path.exists() and inside(path, root):
        return path
    for start in range(1, len(path.parts)):
        candidate = Path(root, *path.parts[start:])
        if (candidate / MANIFEST).is_file():
            return candidate if not path.exists() or _same_run(path, candidate) else path
    return path


def _same_run(a: Path, b: Path) -> bool:
    """Whether two run folders hold one run (one a copy of the other)."""
    first, second = readable_manifest(a), readable_manifest(b)
    key = ("config_hash", "started_at")
    return bool(first and second) and all(first.get(k) == second.get(k) for k in key)


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
