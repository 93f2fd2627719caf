"""Group commit for events that stand alone (refusals, failed logins, job outcomes).

An event that belongs to a change is appended in the change's own transaction (`unit_of_work`).
Events with no transaction of their own used to pay one each, and the chain head serialises
those: at most one commit's latency per event. The recorder lets every caller that arrives
while a commit is running join the next one, so many concurrent callers share one head lock
and one flush, and each caller still returns only once its event is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.service import Event, stage
from app.uow import unit_of_work

_MAX_BATCH = 5000


class AuditRecorder:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._waiting: list[tuple[Event, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, *events: Event) -> None:
        """Append the events to the chain; returns when they are committed."""
        await self.record_all(events)

    async def record_all(self, events: Iterable[Event]) -> None:
        loop = asyncio.get_running_loop()
        futures = []
        for event in events:
            future: asyncio.Future[None] = loop.create_future()
            self._waiting.append((event, future))
            futures.append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="audit-recorder")
        # shield: a caller that is cancelled must not cancel the commit others wait on
        await asyncio.shield(asyncio.gather(*futures))

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:_MAX_BATCH], self._waiting[_MAX_BATCH:]
            try:
                async with unit_of_work(self._sessions) as session:
                    for event, _ in batch:
                        stage(session, event)
            except Exception as exc:  # every waiter learns that its event was not recorded
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def close(self) -> None:
        """Wait for events already handed over; called before the engine closes."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
