"""Migrations are the only way the schema is made: up, down and up again on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from app.db import make_engine, utcnow
from app.errors import ConfigError
from app.migrate import downgrade, upgrade
from app.vault import Vault, generate_key
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


async def _sql(database: str, statement: str, **values: object) -> list[tuple[object, ...]]:
    engine = make_engine(database)
    async with engine.begin() as connection:
        result = await connection.execute(text(statement), values)
        rows = [tuple(row) for row in result] if result.returns_rows else []
    await engine.dispose()
    return rows


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_webhook_urls_stored_in_clear_are_encrypted(backend: str, tmp_path: Path) -> None:
    """0006: the URL delivery uses is encrypted; the stored `url` hides its query values."""
    url, name = new_database_url(backend, tmp_path)
    vault = Vault([generate_key().encode()])
    clear = "https://tickets.example.com/hooks?token=t0k3n"
    try:
        upgrade(url, "0005")
        columns = "url, secret_ciphertext, events, all_sites, active, created_by, created_at"
        values = ":url, :secret, '[]', true, true, 'admin', :now"
        insert = f"INSERT INTO webhook ({columns}, updated_at) VALUES ({values}, :now)"
        asyncio.run(_sql(url, insert, url=clear, secret=vault.encrypt("s" * 16), now=utcnow()))
        with pytest.raises(ConfigError):  # another key: refused before anything is written
            upgrade(url, vault=Vault([generate_key().encode()]))
        upgrade(url, vault=vault)
        [(shown, ciphertext)] = asyncio.run(_sql(url, "SELECT url, url_ciphertext FROM webhook"))
        assert shown == "https://tickets.example.com/hooks?token=***"
        assert isinstance(ciphertext, bytes)
        assert vault.decrypt(ciphertext) == clear
        downgrade(url, "0005", vault=vault)
        assert asyncio.run(_sql(url, "SELECT url FROM webhook")) == [(clear,)]
    finally:
        drop_database(name)
