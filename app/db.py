"""Database engine, ORM base and the column types shared by every domain package."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import JSON, ColumnElement, DateTime, MetaData, String, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from app.datafiles import private_database

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention, so migrations stay stable."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class EnumText(TypeDecorator[Any]):
    """A StrEnum stored as its value in a VARCHAR, read back as the enum member."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int = 32) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> StrEnum | None:
        return None if value is None else self.enum(value)


def status_in(members: Iterable[StrEnum]) -> str:
    """`status IN ('a', 'b')` as SQL text: a partial index serves only the queries that spell
    out its very condition."""
    return f"status IN ({', '.join(repr(member.value) for member in members)})"


JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def fit(text: str, column: ColumnElement[Any] | QueryableAttribute[Any]) -> str:
    """Metadata cut to its VARCHAR(n) column (marked "…" where cut), so that the row is still
    written: PostgreSQL refuses a longer value, SQLite would keep it whole."""
    length: int | None = getattr(column.type, "length", None)
    if length is None or len(text) <= length:
        return text
    return text[: length - 1] + "…"


WRITE = "rackhand_write"
WRITE_LOCK = "rackhand_write_lock"
WRITER = "rackhand_writer"  # session.info key: the session may write


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """WAL lets readers run during a write; foreign keys are off in SQLite unless asked."""
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """Writers take SQLite's write lock up front (BEGIN IMMEDIATE) and so queue behind each
    other; a deferred writer that read first would fail with a stale snapshot instead."""
    immediate = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _json_dumps(value: Any) -> str:
    """orjson for speed; the standard library for what it refuses (integers over 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def make_engine(url: str) -> AsyncEngine:
    """An async engine for SQLite (embedded default) or PostgreSQL (production).

    `hide_parameters`: a failed statement's error (logged, and kept in tracebacks) names its
    SQL but not its values, which can be secrets, password hashes or a caller's input.
    """
    options: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
        "hide_parameters": True,
    }
    if url.startswith("sqlite"):
        private_database(url)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, **options)


def make_sessionmaker(
    engine: AsyncEngine, *, write: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions for reading, or (`write=True`) for transactions that will change something."""
    if not write:
        return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
    # SQLite has one writer at a time: queue writers here, in order, rather than in SQLite's
    # busy handler, which sleeps and retries (16 writers fell to ~350 commits/s).
    info: dict[str, object] = {WRITER: True}
    if engine.dialect.name == "sqlite":
        info[WRITE_LOCK] = asyncio.Lock()
    return async_sessionmaker(
        engine.execution_options(**{WRITE: True}),
        expire_on_commit=False,
        autoflush=False,
        info=info,
    )


async def limit_lock_wait(session: AsyncSession, seconds: float) -> None:
    """Bound how long this transaction waits for a lock: PostgreSQL waits for ever unless told,
    SQLite gives up after its busy timeout (10 s) anyway. Work that retries on its own (job
    reports, heartbeats) would rather fail and try again than hang."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text(f"SET LOCAL lock_timeout = '{max(1, round(seconds * 1000))}ms'"))
