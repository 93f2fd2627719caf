"""The viewers of one device session: each with its own outgoing queue, one holding the lock.

The device session (one per device, held by an agent, possibly across a site's link) and its
viewers (many, at the central) are apart, as Confluent keeps a node's console handler apart
from the console sessions attached to it: the broker feeds the device's output to the
audience, and only the audience knows who may type.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from app.consoles.schemas import Holder
from app.context import RequestContext
from app.db import utcnow

MAX_QUEUED = 8 * 1024 * 1024  # bytes waiting for one viewer before it is dropped as too slow

Mode = Literal["rw", "ro"]
READ_ONLY = "you joined read-only; join again with mode=rw to type"
Item = bytes | str | None  # a binary frame, a text frame, or the end


@dataclass(eq=False)
class Viewer:
    id: str
    ctx: RequestContext
    mode: Mode
    admin: bool
    since: datetime = field(default_factory=utcnow)
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    queued: int = 0
    gone: bool = False
    close_code: int = 1000  # the WebSocket close code once its queue ends
    close_reason: str = ""

    @property
    def name(self) -> str:
        return self.ctx.principal.actor.name

    def send(self, item: Item) -> None:
        if self.gone:
            return
        if isinstance(item, bytes):
            self.queued += len(item)
        self.queue.put_nowait(item)

    def event(self, **fields: Any) -> None:
        self.send(orjson.dumps(fields).decode())

    def sent(self, item: Item) -> None:
        """The sender wrote `item` to the socket: it no longer counts as waiting."""
        if isinstance(item, bytes):
            self.queued -= len(item)


@dataclass(eq=False)
class Audience:
    """Who watches a device session, and who holds its write lock since when."""

    viewers: dict[str, Viewer] = field(default_factory=dict)
    writer: Viewer | None = None
    writer_since: datetime | None = None
    unwatched: float | None = field(default_factory=time.monotonic)  # nobody watches since

    def holder(self) -> Holder | None:
        if self.writer is None or self.writer_since is None:
            return None
        return Holder(viewer=self.writer.id, name=self.writer.name, since=self.writer_since)

    def holder_json(self) -> dict[str, Any] | None:
        holder = self.holder()
        return holder.model_dump(mode="json") if holder is not None else None

    def broadcast(self, **fields: Any) -> None:
        text = orjson.dumps(fields).decode()
        for viewer in self.viewers.values():
            viewer.send(text)

    def add(self, viewer: Viewer) -> None:
        self.viewers[viewer.id] = viewer
        self.unwatched = None

    def remove(self, viewer: Viewer) -> bool:
        """Out of the fan-out (releasing the lock it held); False if it was not in it."""
        if self.viewers.pop(viewer.id, None) is None:
            return False
        if self.writer is viewer:
            self.grant(None)
        if not self.viewers:
            self.unwatched = time.monotonic()
        return True

    def grant(self, viewer: Viewer | None) -> None:
        self.writer = viewer
        self.writer_since = utcnow() if viewer is not None else None

    def fan_out(self, data: bytes) -> list[Viewer]:
        """The device's output to every viewer; those now too far behind, to drop."""
        behind = []
        for viewer in self.viewers.values():
            viewer.send(data)
            if viewer.queued > MAX_QUEUED:
                behind.append(viewer)
        return behind

    def in_use(self) -> str:
        """Why a viewer without the lock cannot type, for people."""
        holder = self.holder()
        if holder is None:
            return "read-only: nobody holds the write lock; send take_write to type"
        since = holder.since.strftime("%H:%M:%S UTC")
        return (
            f"read-only: in use by {holder.name} since {since}; ask them to release it "
            "(an admin may take it over with force)"
        )
