"""Console recordings as asciicast v2 (asciinema's format): a header line, then one event a line.

Output only: what a viewer typed is not kept (passwords echo nowhere, but they are typed).
Bytes are decoded incrementally as UTF-8, so a character split across two reads stays whole;
bytes that are not UTF-8 become U+FFFD in the cast. The SHA-256 and size are computed as the
file is written, so closing does not read it back.
"""

from __future__ import annotations

import codecs
import hashlib
import time
from pathlib import Path
from typing import IO

import orjson

FLUSH_BYTES = 64 * 1024


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
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[bytes] = path.open("xb")  # never overwrite another session's record
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
        self._line(header)
        self.closed = False

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
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            self._file.write(data)
            self._file.flush()

    def close(self) -> tuple[str, int]:
        if not self.closed:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                self._line([self._elapsed(), "o", tail])
            self.flush()
            self._file.close()
            self.closed = True
        return self._hash.hexdigest(), self._size

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


def read_output(path: Path) -> str:
    """The output events of a cast joined, as a player would print them (tests, replay)."""
    text = []
    with path.open("rb") as cast:
        next(cast)  # the header
        for line in cast:
            _, kind, data = orjson.loads(line)
            if kind == "o":
                text.append(data)
    return "".join(text)
