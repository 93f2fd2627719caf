"""The unit of work: a transaction whose staged audit events are appended before it commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.service import append_staged
from app.db import WRITE_LOCK


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """Commit the changes and their audit together when the caller succeeds, else roll back."""
    lock = sessions.kw.get("info", {}).get(WRITE_LOCK) or nullcontext()
    async with lock, sessions() as session:
        try:
            yield session
            await append_staged(session)
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
