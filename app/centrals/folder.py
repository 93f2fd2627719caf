"""One central per data folder: the folder holds the SQLite database, recordings and the
spill file of job reports, which only the process that wrote them may replay or rotate."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from app.datafiles import private_folder
from app.errors import ConfigError

LOCK_FILE = "rackhand.lock"


class DataFolderInUse(ConfigError):
    """Another central holds the data folder."""


class DataFolderLock:
    """An exclusive `flock` on `<data_dir>/rackhand.lock`, held for the process's life.

    The kernel lets go when the process ends, however it ends, so a crash leaves no stale lock.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or refuse naming the process that holds it."""
        private_folder(self.folder)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataFolderInUse(
                f"another Rackhand central (pid {holder}) is using the data folder "
                f"{self.folder}; stop it first, or give this one its own data folder "
                "(--data-dir, RACKHAND_DATA_DIR)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
