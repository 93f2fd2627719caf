"""Refusals into the audit log, with rejected credentials counted rather than copied.

Any anonymous client can send a bogus token, so one `auth.rejected` event per request let
anyone grow the chain and the disk without end (300 events in 1.5 s, up to 60 KB each).
Rejections are aggregated per (source, credential) instead: the first of a minute is written
at once, the others are counted and written as one event with their `count` when the minute
is over (or at shutdown). Every string an event carries from the request is cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from app.audit.models import EventType
from app.audit.recorder import AuditRecorder
from app.audit.service import Actor, Event

log = logging.getLogger(__name__)
Clock = Callable[[], float]

TOKEN_PREFIX_CHARS = 10  # "rh_" and 7 more: names the token to its owner, guesses nothing
TEXT_CHARS = 128  # path and user agent
MAX_KEYS = 10_000  # sources tracked at once; beyond, the others share one count


def clip(text: str | None, limit: int = TEXT_CHARS) -> str | None:
    """At most `limit` characters, marked when cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


class Presented(StrEnum):
    """The kind of credential that was rejected (`details.credential`)."""

    TOKEN = "token"  # Authorization: Bearer …
    SESSION = "session"  # the dashboard's cookie
    JOIN = "join_token"  # an agent's one-time join token (POST /agents/join)
    AGENT = "agent_credential"  # an agent's credential on its link (WS /agents/link)


@dataclass(frozen=True)
class Rejection:
    """A credential that was presented and does not work; fields are clipped when made."""

    credential: Presented
    source_ip: str | None
    prefix: str | None
    path: str
    user_agent: str | None

    @classmethod
    def of(
        cls,
        credential: Presented,
        source_ip: str | None,
        token: str | None,
        path: str,
        user_agent: str | None,
    ) -> Rejection:
        prefix = token[:TOKEN_PREFIX_CHARS] if token and token.startswith("rh_") else None
        return cls(credential, clip(source_ip, 64), prefix, clip(path) or "", clip(user_agent))


@dataclass
class _Window:
    opened: float
    count: int = 0  # rejections since the last event
    last: Rejection | None = None


class RefusalLog:
    """Where refusals go: events as they come, rejected credentials aggregated.

    `record` is the one entry point for a refusal's event, from HTTP error handlers and
    WebSocket handshakes alike.
    """

    def __init__(
        self,
        audit: AuditRecorder,
        window: float = 60.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._audit = audit
        self._window = window
        self._clock = clock
        self._windows: dict[tuple[str | None, Presented], _Window] = {}
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_every(), name="refusal-log")

    async def record(self, event: Event | Rejection) -> None:
        if isinstance(event, Event):
            await self._audit.record(event)
            return
        now = self._clock()
        key = (event.source_ip, event.credential)
        if key not in self._windows and len(self._windows) >= MAX_KEYS:
            event = dataclasses.replace(event, source_ip=None)  # counted with the others
            key = (None, event.credential)
        window = self._windows.get(key)
        if window is None or now - window.opened >= self._window:
            count = 1 + (window.count if window else 0)
            self._windows[key] = _Window(opened=now)
            await self._audit.record(_event(event, count))
        else:
            window.count += 1
            window.last = event

    async def flush(self, everything: bool = False) -> None:
        """Write the counts of windows that are over (all of them, at shutdown)."""
        now = self._clock()
        taken: list[tuple[tuple[str | None, Presented], _Window]] = []
        for key, window in list(self._windows.items()):
            if not everything and now - window.opened < self._window:
                continue
            if window.count:
                taken.append((key, window))
                self._windows[key] = _Window(opened=now)
            else:
                del self._windows[key]
        if not taken:
            return
        try:
            await self._audit.record_all(_event(w.last, w.count) for _, w in taken if w.last)
        except Exception:  # not written: the counts wait for the next flush
            for key, window in taken:
                again = self._windows.setdefault(key, _Window(opened=now))
                again.count += window.count
                again.last = again.last or window.last
            raise

    async def close(self) -> None:
        """Stop the timer and write every pending count; before the audit recorder closes."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush(everything=True)

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self._window / 2)
            try:
                await self.flush()
            except Exception:  # the database is away: keep counting, write them next time
                log.warning("could not write the counts of rejected credentials", exc_info=True)


def _event(rejection: Rejection, count: int) -> Event:
    return Event(
        EventType.AUTH_REJECTED,
        Actor("anonymous", None, "anonymous"),
        outcome="denied",
        source_ip=rejection.source_ip,
        details={
            "credential": rejection.credential.value,
            "prefix": rejection.prefix,
            "path": rejection.path,
            "user_agent": rejection.user_agent,
            "count": count,
        },
    )
