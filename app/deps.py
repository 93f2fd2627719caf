"""Request-scoped dependencies, as `Annotated` aliases for route signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.uow import unit_of_work
from app.vault import Vault


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work, committed before the response is sent.

    Requests that may change something take a writer's transaction from the start.
    """
    writes = request.method not in ("GET", "HEAD", "OPTIONS")
    sessions = request.app.state.write_sessions if writes else request.app.state.sessions
    async with unit_of_work(sessions) as session:
        yield session


def _vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
VaultDep = Annotated[Vault, Depends(_vault)]
