"""The files Rackhand keeps at rest: readable by the service's own user only.

The data folder holds the SQLite database (device secrets, encrypted, and the audit log), the
generated service key on the embedded default, and console recordings (what a BIOS screen or
a root shell showed). New folders are made 0700 and new files 0600, whatever the umask; the
folders and files that older versions left 0755 and 0644 are tightened at start, with a
warning that says what changed. Only the owner's bits are kept (`mode & 0o700`), so nothing
the owner could do before is taken away.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy import make_url

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600
OWNER = 0o700  # the owner's bits, which tightening keeps
OTHERS = 0o077  # group and world bits, which it drops
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")  # SQLite gives them the database's mode
KEPT = ("secret.key", "recordings", "sim-host-keys")  # what Rackhand writes in the data folder


def private_folder(path: Path) -> None:
    """Make `path` and its missing parents 0700 (`mkdir -p` leaves parents to the umask), or
    tighten `path` if it is there already."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
    if not missing and _tighten(path):
        log.warning("made the folder %s private (0700): it was open to other users", path)


def create_private(path: Path) -> int:
    """A new file, 0600 from its first byte (never a moment readable by others); its fd."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)


def private_database(url: str) -> None:
    """A SQLite database file, made 0600 before SQLite creates it (its -wal and -shm files take
    its mode), or tightened with its companions if an older version left them open."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite's own error says which folder is missing
    try:
        os.close(create_private(path))
    except FileExistsError:
        files = [path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)]
        tightened = [file.name for file in files if file.exists() and _tighten(file)]
        if tightened:
            log.warning(
                "made the database files %s in %s private (0600): they were open to other users",
                ", ".join(tightened),
                path.parent,
            )


def secure_data_dir(data_dir: Path) -> None:
    """The data folder 0700 and what Rackhand keeps in it owner-only (blocking: walks the
    recordings; call it off the event loop)."""
    private_folder(data_dir)
    tightened = 0
    for name in KEPT:
        top = data_dir / name
        if not top.exists():
            continue
        tightened += _tighten(top)
        for folder, folders, files in os.walk(top):
            for entry in (*folders, *files):
                tightened += _tighten(Path(folder, entry))
    if tightened:
        log.warning(
            "made %d files and folders in %s private (0600 and 0700): an older version left "
            "them open to other users",
            tightened,
            data_dir,
        )


def _tighten(path: Path) -> bool:
    """Drop the group and world bits; True if there were any. A file we may not change (not
    ours) is left as it is, with a warning."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode) or not mode & OTHERS:
            return False
        path.chmod(stat.S_IMODE(mode) & OWNER)
    except OSError as exc:
        log.warning("could not make %s private (%s); chmod go-rwx it by hand", path, exc)
        return False
    return True
