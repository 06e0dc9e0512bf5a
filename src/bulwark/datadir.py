"""The data directory holds secrets (the SQLite database with its private keys, TLS keys, demo
credentials): only the account that runs Bulwark may read it.

``secure_data_dir`` creates it 0700, and at every start tightens it and everything under it that
is looser (directories to 0700, files to 0600), logging a warning for each so an operator learns
that something had been readable by others.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("bulwark.datadir")

DIR_MODE = 0o700
FILE_MODE = 0o600
# Files created by this process (SQLite's database, WAL and SHM among them) get no group or
# other bits.
PROCESS_UMASK = 0o077


def _tighten(path: Path, wanted: int) -> str | None:
    mode = stat.S_IMODE(path.lstat().st_mode)
    if mode & ~wanted == 0:
        return None
    path.chmod(mode & wanted)
    return f"{path} was {mode:04o}, now {mode & wanted:04o}"


def secure_data_dir(data_dir: Path) -> list[str]:
    """Create ``data_dir`` (0700) or tighten it and its contents; return what was tightened."""
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    changed = []
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        if (change := _tighten(here, DIR_MODE)) is not None:
            changed.append(change)
        for name in files:
            path = here / name
            if path.is_symlink() or not path.is_file():
                continue
            if (change := _tighten(path, FILE_MODE)) is not None:
                changed.append(change)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
    for change in changed:
        log.warning("data directory permissions were too open; tightened: %s", change)
    return changed


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (before a library creates it 0644)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
