"""Paths as a user writes them (a config value, a command-line argument): `~` expanded."""

import os
from pathlib import Path


def user_path(value: str | Path) -> Path:
    """`value` with a leading `~` or `~user` expanded as a shell would; `~name` of no such user
    stays as written (pathlib's expanduser raises "Could not determine home directory")."""
    return Path(os.path.expanduser(str(value)))
