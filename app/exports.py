"""Streamed downloads (the audit and device exports): how many run at once, how slow a reader
may be.

An export reads the database in short transactions between the chunks it sends, so a reader
that stops reading holds no connection. What it still holds is bounded here: a slot (a few
exports per user, a few more overall; one more is refused with 429), and a send that waits
longer than `stall_seconds` for the reader ends the response, which closes the connection.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
from fastapi import Depends, Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from app.errors import TooManyExports
from app.identity.auth import Ctx

log = logging.getLogger(__name__)

RETRY_AFTER = 5  # seconds; an export's length is unknown, so a short, honest guess
CHUNK_BYTES = 64 * 1024  # per send: a reader must take about this much per stall period


class Exports:
    """The running exports, per caller (user id) and overall."""

    def __init__(self, per_caller: int, at_once: int, stall_seconds: float) -> None:
        self.per_caller = per_caller
        self.at_once = at_once
        self.stall_seconds = stall_seconds
        self._running: Counter[int] = Counter()

    @property
    def running(self) -> int:
        """Exports streaming now, every caller's (for operators' checks and tests)."""
        return self._running.total()

    @asynccontextmanager
    async def slot(self, caller: int) -> AsyncIterator[None]:
        """Hold one of the caller's slots for the export's whole life, or refuse at once."""
        if self._running[caller] >= self.per_caller:
            raise TooManyExports(
                f"you have {self._running[caller]} exports running, the most at once per user; "
                "let one finish (or close it), then retry",
                RETRY_AFTER,
            )
        if self._running.total() >= self.at_once:
            raise TooManyExports(
                f"{self.at_once} exports are running, the most this server streams at once; "
                f"retry in {RETRY_AFTER} seconds",
                RETRY_AFTER,
            )
        self._running[caller] += 1
        try:
            yield
        finally:
            self._running[caller] -= 1
            if not self._running[caller]:
                del self._running[caller]

    def response(
        self, body: AsyncGenerator[bytes, None], media_type: str, filename: str
    ) -> StreamingResponse:
        return PacedResponse(
            body,
            self.stall_seconds,
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


class _ReaderStalled(Exception):
    pass


class PacedResponse(StreamingResponse):
    """A stream that gives up on a reader who takes nothing for `stall_seconds`.

    Starlette's send waits while the server's write buffer is full (uvicorn pauses at 64 KiB),
    so a reader who stops reading stops the stream in `send`: that wait gets a deadline. The
    response then ends without its last chunk; the server closes the connection and the
    client sees a truncated body, never a complete-looking one.
    """

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        stall_seconds: float,
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self._stream = body
        self.stall_seconds = stall_seconds
        self.reader = "?"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host, _ = scope.get("client") or ("?", 0)
        self.reader = str(host)
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        async def paced(message: Message) -> None:
            try:
                with anyio.fail_after(self.stall_seconds):
                    await send(message)
            except TimeoutError as exc:  # the reader's, not one of the database's
                raise _ReaderStalled from exc

        try:
            await super().stream_response(paced)
        except _ReaderStalled:
            log.warning(
                "export to %s cut off: the reader took nothing for %g s",
                self.reader,
                self.stall_seconds,
            )
        finally:
            with anyio.CancelScope(shield=True):  # the generator's cleanup, even on disconnect
                await self._stream.aclose()


def pieces(lines: Iterable[bytes]) -> Iterable[bytes]:
    """Lines joined into chunks of about CHUNK_BYTES, so one send is neither a line nor a batch."""
    piece = bytearray()
    for line in lines:
        piece += line
        if len(piece) >= CHUNK_BYTES:
            yield bytes(piece)
            piece.clear()
    if piece:
        yield bytes(piece)


async def _slot(request: Request, ctx: Ctx) -> AsyncIterator[Exports]:
    """Held from the request until the response has been sent (or cut off)."""
    exports: Exports = request.app.state.exports
    async with exports.slot(ctx.principal.user_id):
        yield exports


ExportSlot = Annotated[Exports, Depends(_slot)]
