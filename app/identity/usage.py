"""When each API token was last used: noted off the request's path, written at most once a
minute per token.

`last_used_at` helps a person spot a forgotten or stolen token; it is not worth failing or
slowing a request for. A request only notes the use in memory; a background task writes the
notes, and a busy database costs a log line, never the request.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import limit_lock_wait
from app.identity import service
from app.identity.models import ApiToken
from app.uow import unit_of_work

log = logging.getLogger(__name__)

_AGAIN_AFTER = service.LAST_USED_GRANULARITY.total_seconds()


class TokenUse:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, lock_wait: float = 2.0
    ) -> None:
        self._sessions = sessions
        self._lock_wait = lock_wait
        self._noted: set[int] = set()
        self._tried: dict[int, float] = {}  # token id → when its use was last written (or tried)
        self._writer: asyncio.Task[None] | None = None

    def note(self, token: ApiToken) -> None:
        """The token was just used; its `last_used_at` is written soon, if it is a minute old."""
        now = time.monotonic()
        if (
            not service.needs_last_used(token)
            or now - self._tried.get(token.id, -_AGAIN_AFTER) < _AGAIN_AFTER
        ):
            return
        self._tried[token.id] = now
        self._noted.add(token.id)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="token-last-used")

    async def _write(self) -> None:
        while self._noted:
            batch, self._noted = sorted(self._noted), set()
            try:
                async with unit_of_work(self._sessions) as session:
                    await limit_lock_wait(session, self._lock_wait)
                    for token_id in batch:
                        await service.mark_used(session, token_id)
            except Exception as exc:  # a note, not a record: the next use a minute on tries again
                log.warning(
                    "the last use of %d API tokens was not recorded (%s: %s)",
                    len(batch),
                    type(exc).__name__,
                    getattr(exc, "orig", exc),
                )
            if len(self._tried) > 10_000:
                horizon = time.monotonic() - _AGAIN_AFTER
                self._tried = {key: at for key, at in self._tried.items() if at > horizon}

    async def close(self) -> None:
        """Let the last write finish, for as long as one may wait for a lock."""
        if self._writer is not None and not self._writer.done():
            done, _ = await asyncio.wait({self._writer}, timeout=self._lock_wait + 10)
            if not done:
                self._writer.cancel()
