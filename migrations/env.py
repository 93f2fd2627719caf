"""Alembic environment: async engine, URL from the caller or from Rackhand's settings."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.db import Base, make_engine
from app.errors import ConfigError
from app.models import load_all

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

load_all()
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url")
    return str(url) if url else Settings().database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_url())
    async with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await _sqlite_pragma(connection, "PRAGMA foreign_keys=OFF")
        await connection.run_sync(_run)
        if sqlite:
            await _check_foreign_keys(connection)
    await engine.dispose()


async def _sqlite_pragma(connection: AsyncConnection, statement: str) -> list[tuple[object, ...]]:
    """On the driver's connection, outside a transaction (where the pragma would do nothing).

    SQLite alters a table by copying it and dropping the old one; with foreign keys on, that
    drop deletes the old table's rows first, and ON DELETE CASCADE then empties every table
    that refers to it (a batch change of `api_token` emptied `access_grant`). Alembic's
    advice: foreign keys off while migrating, then check them.
    """
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None  # a live, checked-out connection
    cursor = await driver.execute(statement)
    return [tuple(row) for row in await cursor.fetchall()]


async def _check_foreign_keys(connection: AsyncConnection) -> None:
    broken = await _sqlite_pragma(connection, "PRAGMA foreign_key_check")
    await _sqlite_pragma(connection, "PRAGMA foreign_keys=ON")
    if broken:
        raise ConfigError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
