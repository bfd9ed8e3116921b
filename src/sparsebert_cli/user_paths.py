"""Paths as a user writes them (a config value, a command-line argument): `~` and `$VAR`
expanded."""

import os
from collections.abc import Callable
from pathlib import Path


def user_path(value: str | Path) -> Path:
    """`value` with a leading `~` or `~user` expanded as a shell would; `~name` of no such user
    stays as written (pathlib's expanduser raises "Could not determine home directory")."""
    return Path(os.path.expanduser(str(value)))


def path_is(check: Callable[[Path], bool], path: str | Path) -> bool:
    """`check` (Path.is_dir / is_file) of a user's path; a name the system refuses (too long,
    not encodable, ~user that does not exist) is simply not there."""
    try:
        return check(user_path(path))
    except (OSError, ValueError, RuntimeError):
        return False


def folder_problem(value: str) -> str | None:
    """What is wrong with a value that is a local folder or a Hugging Face hub name, when it is
    meant as a folder (it starts with /, ./, ../ or ~, which a hub name never does, or names
    something that exists): "is a file, not a folder" or "does not exist"; else None."""
    if path_is(Path.is_dir, value):
        return None
    exists = path_is(Path.exists, value)
    if exists:
        return "is a file, not a folder"
    return "does not exist" if str(value).startswith(("/", "./", "../", "~")) else None


def expand_path(value: str) -> str:
    """`~`, `$VAR` and `${VAR}` expanded: a path written in a config file, or quoted on the command
    line (Hydra's override grammar refuses an unquoted `~`; an unquoted `$HOME/...` is expanded
    by the shell already). Empty stays empty (pathlib would make it ".", the launch folder). The
    path is normalised (`./a.txt` is `a.txt`: one file, one content hash); a `./` that marks a
    folder rather than a hub name is checked on the command line (validation)."""
    return os.path.expandvars(user_path(value)) if value else value
