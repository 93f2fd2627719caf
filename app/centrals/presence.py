"""This central's heartbeat, and the rule for whose work another central may end.

Tasks and console sessions carry the id of the central that runs them (`owner_id`). A central
is gone when its row is missing or its last heartbeat is older than three of its own
intervals; only then may another central (or this one, started anew) end its work as `lost`.
Times come from the database's clock on PostgreSQL, so centrals on several hosts compare one
clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from app.centrals.models import Central
from app.db import limit_lock_wait, utcnow
from app.uow import unit_of_work

log = logging.getLogger(__name__)

GRACE_BEATS = 3  # heartbeats a central may miss before its work is another's to end
FORGET_AFTER = timedelta(days=1)  # rows of centrals gone this long are removed

Sweep = Callable[[], Awaitable[object]]


async def db_now(session: AsyncSession) -> datetime:
    """Now, by the database's clock on PostgreSQL (one clock for every host)."""
    if session.get_bind().dialect.name == "postgresql":
        now = await session.scalar(select(func.now()))
        assert isinstance(now, datetime)
        return now
    return utcnow()


@dataclass(frozen=True)
class Owners:
    """Who may be relied on to finish its own work, as seen at one moment."""

    me: str
    alive: frozenset[str]
    rows: dict[str, Central] = field(default_factory=dict)

    def gone(self, owner: InstrumentedAttribute[str | None]) -> ColumnElement[bool]:
        """Rows whose owner is gone: none recorded, or not this central nor a live one."""
        return or_(owner.is_(None), owner.not_in(sorted(self.alive | {self.me})))

    def why(self, owner: str | None) -> str:
        """Why the owner's work is ended, for the task's or session's message."""
        row = self.rows.get(owner or "")
        if row is None:
            return "the central that ran it stopped"
        heard = row.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"the central that ran it (pid {row.pid} on {row.host}) stopped: no heartbeat "
            f"since {heard}"
        )


class Presence:
    """This central's row in `central`, kept fresh while the process lives."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        interval: float = 10.0,
        lock_wait: float = 10.0,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.interval = interval
        self._sessions = sessions
        self._lock_wait = lock_wait
        self._started_at: datetime | None = None
        self._loop: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        """Write the heartbeat; the row again if it is missing (a peer took this one for gone)."""
        async with unit_of_work(self._sessions) as session:
            await limit_lock_wait(session, self._lock_wait)
            now = await db_now(session)
            self._started_at = self._started_at or now
            result = cast(
                CursorResult[Any],
                await session.execute(
                    update(Central).where(Central.id == self.id).values(heartbeat_at=now)
                ),
            )
            if result.rowcount == 0:
                session.add(
                    Central(
                        id=self.id,
                        host=socket.gethostname()[:255],
                        pid=os.getpid(),
                        started_at=self._started_at,
                        heartbeat_at=now,
                        interval_seconds=self.interval,
                    )
                )
            await session.execute(delete(Central).where(Central.heartbeat_at < now - FORGET_AFTER))

    async def owners(self, session: AsyncSession) -> Owners:
        """Which centrals are alive now (this one always is)."""
        now = await db_now(session)
        rows = {row.id: row for row in await session.scalars(select(Central))}
        alive = frozenset(
            row.id
            for row in rows.values()
            if row.heartbeat_at + timedelta(seconds=GRACE_BEATS * row.interval_seconds) >= now
        )
        return Owners(self.id, alive, rows)

    def start(self, sweeps: Sequence[Sweep]) -> None:
        """Beat every interval, then run the sweeps (ending the work of centrals gone since)."""
        self._loop = asyncio.create_task(self._run(sweeps), name="central-heartbeat")

    async def _run(self, sweeps: Sequence[Sweep]) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception:  # the next beat may pass; peers wait three intervals
                log.warning("the heartbeat could not be written; trying again", exc_info=True)
            for sweep in sweeps:
                try:
                    await sweep()
                except Exception:
                    log.warning("a recovery sweep failed; it runs again", exc_info=True)

    async def stop(self) -> None:
        """Stop beating and remove the row: peers may end what is left at once."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        try:
            async with unit_of_work(self._sessions) as session:
                await limit_lock_wait(session, self._lock_wait)
                await session.execute(delete(Central).where(Central.id == self.id))
        except Exception:  # peers then wait out the grace instead
            log.warning("this central's row could not be removed at stop", exc_info=True)
