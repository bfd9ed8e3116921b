"""Atomic file writes: write a temp file beside the target, then `os.replace` it into place.

A reader never sees a half-written mask file, even if the writer is killed mid-write.
"""

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` to create a temp file in `path`'s folder, then move it onto `path`.

    The writer creates the temp file itself, so it gets the usual permissions (umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
