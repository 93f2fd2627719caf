"""The spill file: task outcomes the database could not take for a while, kept on disk.

JSON lines in the data folder, each batch fsynced before the engine counts it as kept, mode
0600 (messages name devices and their addresses). Read back when the database answers again
and at start-up, before recovery ends anything as `lost`. A line cut short by a crash is
skipped with a log line. The calls block: the engine makes them in a thread.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

FILE_NAME = "job-reports.spill.jsonl"
REJECTED_FILE = "job-reports.rejected.jsonl"  # reports the database refused by themselves


class SpillFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add the records; they are on the disk when this returns."""
        created = not self.path.exists()
        data = b"".join(orjson.dumps(record) + b"\n" for record in records)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            self._sync_folder()

    def read(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for number, line in enumerate(lines, 1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning(
                    "%s line %d is cut short (a crash while writing); skipped", self.path, number
                )
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def clear(self) -> None:
        """Everything in it is stored in the database now."""
        if self.path.exists():
            self.path.unlink()
            self._sync_folder()

    def _sync_folder(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
