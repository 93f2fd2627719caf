"""A database held busy by another connection, as a backup, a long migration or a person at
`psql` would hold it; and the one wait for a condition that the tests of that share."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import make_engine


@contextmanager
def held(
    database_url: str, table: str, mode: str = "ACCESS EXCLUSIVE", at_most: float = 30.0
) -> Iterator[None]:
    """SQLite: the whole database write-locked (`BEGIN EXCLUSIVE`); PostgreSQL: `LOCK TABLE
    table IN mode` (ACCESS EXCLUSIVE stops reads of it too), until the block ends, or on
    PostgreSQL `at_most` seconds (a code under test that waits for the lock fails, not hangs)."""
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    taken, release = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    async def hold() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            async with connection.transaction():
                await connection.execute(f"LOCK TABLE {table} IN {mode} MODE")
                taken.set()
                await asyncio.to_thread(release.wait, at_most)
        finally:
            await connection.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:
            failed.append(exc)
            taken.set()

    holder = threading.Thread(target=run, name="lock-holder")
    holder.start()
    taken.wait(30)
    if failed:
        raise failed[0]
    try:
        yield
    finally:
        release.set()
        holder.join(30)


def impatient_engine(database_url: str, busy_ms: int = 100) -> AsyncEngine:
    """An engine whose SQLite connections give up on a lock after `busy_ms` rather than 10 s,
    so a test sees failed writes quickly (PostgreSQL: the caller's `lock_timeout` does it)."""
    engine = make_engine(database_url)
    if database_url.startswith("sqlite"):

        def short_busy_timeout(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        event.listen(engine.sync_engine, "connect", short_busy_timeout)
    return engine


async def settled(check: Callable[[], bool | Awaitable[bool]], within: float = 20.0) -> None:
    """Wait until `check` holds (polled: the engine changes state from its own tasks)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {within:g} s")
        await asyncio.sleep(0.05)
