"""Build-once Arrow caches: a content key, a lock so concurrent runs build once, atomic publish."""

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from sparsebert_cli.user_paths import user_path


def content_key(parts: dict) -> str:
    """A short stable hash of JSON-serialisable parts (the cache folder's name)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_fingerprint(paths) -> list[tuple[str, int, int]]:
    """(absolute path, size, mtime in ns) of each file: what decides that a local input changed.

    Size and modification time, not a content hash, so that fingerprinting a large corpus costs
    one `stat` per file; an edit that keeps both (rare: mtime has ns resolution) goes unnoticed.
    """
    found = []
    for path in sorted({str(user_path(p).resolve()) for p in paths}):
        try:
            info = Path(path).stat()
        except FileNotFoundError:  # deleted since its folder was listed: not part of the data
            continue
        found.append((path, info.st_size, info.st_mtime_ns))
    return found


def cached_dataset(path: Path, build: Callable):
    """Load the Dataset/DatasetDict saved at `path`, building and saving it first if absent.

    The result is written to a temporary folder and renamed into place, so a crash never leaves a
    half-written cache that a later run would trust.
    """
    import datasets
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            partial = path.with_name(path.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            build().save_to_disk(str(partial))
            os.replace(partial, path)
    return datasets.load_from_disk(str(path))
