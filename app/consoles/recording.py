"""Console recordings as asciicast v2 (asciinema's format): a header line, then one event a line.

Output only: what a viewer typed is not kept (passwords echo nowhere, but they are typed).
Bytes are decoded incrementally as UTF-8, so a character split across two reads stays whole;
bytes that are not UTF-8 become U+FFFD in the cast. The SHA-256 and size are computed as the
file is written, so closing does not read it back. Disk writes run on one thread shared by
all recordings (in order, never on the event loop). Casts are 0600 in 0700 folders: they hold
what consoles showed (BIOS setup, root shells).
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import orjson

from app.datafiles import create_private, private_folder

FLUSH_BYTES = 64 * 1024
_DISK = ThreadPoolExecutor(1, thread_name_prefix="recordings")  # one queue: writes stay in order


class Recording:
    """One session's cast file; `close` returns (sha256 hex, size in bytes)."""

    def __init__(
        self,
        path: Path,
        *,
        cols: int,
        rows: int,
        title: str,
        started: float | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self._file: IO[bytes] | None = None  # opened by the first write, on the disk thread
        self._hash = hashlib.sha256()
        self._size = 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._clock = time.monotonic
        self._start = self._clock()
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(started if started is not None else time.time()),
            "title": title,
            "env": env or {"TERM": "xterm-256color"},
        }
        self.closed = False
        self._line(header)

    def output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._line([self._elapsed(), "o", text])

    def resize(self, cols: int, rows: int) -> None:
        self._line([self._elapsed(), "r", f"{cols}x{rows}"])

    def marker(self, label: str) -> None:
        """A marker (asciicast "m"): who took the write lock, a break sent, a power action."""
        self._line([self._elapsed(), "m", label])

    def flush(self) -> None:
        """Hand what is pending to the disk thread."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            asyncio.get_running_loop().run_in_executor(_DISK, self._write, data)

    async def close(self) -> tuple[str, int]:
        if not self.closed:
            self.closed = True
            tail = self._decoder.decode(b"", final=True)
            if tail:
                self._line([self._elapsed(), "o", tail])
            self.flush()
            await asyncio.get_running_loop().run_in_executor(_DISK, self._close_file)
        return self._hash.hexdigest(), self._size

    def _write(self, data: bytes) -> None:
        if self._file is None:
            private_folder(self.path.parent)
            # 0600 and never over another session's record (O_EXCL)
            self._file = os.fdopen(create_private(self.path), "wb")
        self._file.write(data)
        self._file.flush()

    def _close_file(self) -> None:
        if self._file is None:
            self._write(b"")
        assert self._file is not None
        self._file.close()

    def _elapsed(self) -> float:
        return round(self._clock() - self._start, 6)

    def _line(self, value: object) -> None:
        line = orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
        self._hash.update(line)
        self._size += len(line)
        self._pending.append(line)
        self._pending_size += len(line)
        if self._pending_size >= FLUSH_BYTES:
            self.flush()
