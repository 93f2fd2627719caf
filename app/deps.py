"""Request-scoped dependencies, as `Annotated` aliases for route signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.uow import unit_of_work
from app.vault import Vault

F = TypeVar("F", bound=Callable[..., Any])
_OWN = "__rackhand_own_transactions__"


def own_transactions(endpoint: F) -> F:
    """Mark a route that commits its own short transactions (it waits on devices between them).

    Its request session then only reads (authentication), so no writer's transaction (on
    SQLite: the database's write lock) is held while devices are being talked to.
    """
    setattr(endpoint, _OWN, True)
    return endpoint


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work, committed before the response is sent.

    Requests that may change something take a writer's transaction from the start.
    """
    writes = request.method not in ("GET", "HEAD", "OPTIONS") and not getattr(
        request.scope.get("endpoint"), _OWN, False
    )
    sessions = request.app.state.write_sessions if writes else request.app.state.sessions
    async with unit_of_work(sessions) as session:
        yield session


def _write_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    """For a route marked `own_transactions`: its short write transactions."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.write_sessions
    return sessions


def _vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
WriteSessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_write_sessions)]
VaultDep = Annotated[Vault, Depends(_vault)]
