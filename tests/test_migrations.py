"""Migrations are the only way the schema is made: up, down and up again on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect

from app.db import make_engine
from app.migrate import downgrade, upgrade
from tests.conftest import drop_database, new_database_url


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    return names


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_downgrade_upgrade(backend: str, tmp_path: Path) -> None:
    url, name = new_database_url(backend, tmp_path)
    try:
        upgrade(url)
        assert {"site", "rack", "device", "device_tag", "control_path"} <= asyncio.run(_tables(url))
        downgrade(url)
        assert asyncio.run(_tables(url)) <= {"alembic_version"}
        upgrade(url)
        assert "device" in asyncio.run(_tables(url))
    finally:
        drop_database(name)
