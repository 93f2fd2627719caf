"""A console's output on its way to the reader: bounded, in order, ended once with a reason.

Shared by the SOL driver (in an IPMI worker process) and the worker pool's console proxy (in
the agent's process), which must not import pyghmi for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 256 * 1024  # bytes of unread output a console keeps; the oldest go beyond it
CLOSED = "closed"  # the reason of a console closed by its caller


class OutputBuffer:
    """A console's output waiting for its reader: in order, bounded, ended once with a reason.

    Used from one event loop. Beyond `limit` unread bytes the oldest output is dropped (the
    newest is what the screen shows) and counted in `dropped`.
    """

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self.reason: str | None = None
        self.dropped = 0

    def put(self, data: bytes) -> None:
        if self.reason is not None or not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        while self._size > self._limit:
            old = self._chunks.popleft()
            self._size -= len(old)
            if not self.dropped:
                log.warning("a console's reader is behind; dropping its oldest output")
            self.dropped += len(old)
        self._wake()

    def end(self, reason: str) -> None:
        """No more output; the reader gets what is buffered, then stops."""
        if self.reason is None:
            self.reason = reason
            self._wake()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Everything buffered at each wake-up, joined: one chunk per turn, however many came."""
        while True:
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._size = 0
                yield data
                continue
            if self.reason is not None:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
