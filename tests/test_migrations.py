"""Migrations are the only way the schema is made: up, down and up again on both databases."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_tokens_without_expiry_get_one_year_and_keep_their_grants(
    backend: str, tmp_path: Path
) -> None:
    """0007: every token expires; SQLite's table copy must not cascade into token grants."""
    url, name = new_database_url(backend, tmp_path)
    try:
        upgrade(url, "0006")
        now = utcnow()
        user = (
            "INSERT INTO user_account (id, username, display_name, password_hash, disabled, "
            "created_at, updated_at) VALUES (1, 'admin', '', 'x', false, :now, :now)"
        )
        token = (
            "INSERT INTO api_token (id, user_id, name, kind, prefix, token_hash, created_at) "
            "VALUES (1, 1, 'forever', 'api', 'rh_abc', 'h', :now)"
        )
        asyncio.run(_sql(url, user, now=now))
        asyncio.run(_sql(url, token, now=now))
        asyncio.run(_sql(url, "INSERT INTO access_grant (token_id, role) VALUES (1, 'viewer')"))
        upgrade(url)
        [(expires, parent)] = asyncio.run(_sql(url, "SELECT expires_at, parent_id FROM api_token"))
        if isinstance(expires, str):  # SQLite gives the text back
            expires = datetime.fromisoformat(expires).replace(tzinfo=UTC)
        assert isinstance(expires, datetime)
        assert timedelta(days=364) < expires - now <= timedelta(days=366)
        assert parent is None
        assert asyncio.run(_sql(url, "SELECT token_id, role FROM access_grant")) == [(1, "viewer")]
        downgrade(url, "0006")
        assert asyncio.run(_sql(url, "SELECT count(*) FROM access_grant")) == [(1,)]
    finally:
        drop_database(name)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_what_receivers_answered_is_forgotten(backend: str, tmp_path: Path) -> None:
    """0009: a failed delivery keeps the receiver's status code, not the start of its answer."""
    url, name = new_database_url(backend, tmp_path)
    vault = Vault([generate_key().encode()])
    kept = {
        "answered 500: root:x:0:0:root:/root:/bin/bash": (500, "answered 500"),
        "answered 302 to http://10.0.0.5/admin?t=***; redirects are not followed": (
            302,
            "answered 302, a redirect; redirects are not followed",
        ),
        "answered 404": (404, "answered 404"),
        "RemoteProtocolError: illegal status line: bytearray(b'SSH-2.0-OpenSSH_9.6')": (
            None,
            "RemoteProtocolError: the answer was not HTTP/1.1",
        ),
        "ConnectError: [Errno 111] Connection refused": (
            None,
            "ConnectError: [Errno 111] Connection refused",
        ),
    }
    try:
        upgrade(url, "0007")
        columns = "url, url_ciphertext, secret_ciphertext, events, all_sites, active, created_by"
        webhook = (
            f"INSERT INTO webhook (id, {columns}, created_at, updated_at) "
            "VALUES (1, 'https://x.example', :url, :secret, '[]', true, true, 'admin', :now, :now)"
        )
        secret = vault.encrypt("s" * 16)
        asyncio.run(_sql(url, webhook, url=secret, secret=secret, now=utcnow()))
        delivery = (
            "INSERT INTO webhook_delivery (id, webhook_id, event, subject, payload, status, "
            "attempts, last_status_code, last_error, created_at) VALUES "
            "(:id, 1, 'job.finished', 'j', '{}', 'failed', 1, :code, :error, :now)"
        )
        for number, (error, (code, _)) in enumerate(kept.items()):
            asyncio.run(_sql(url, delivery, id=str(number), code=code, error=error, now=utcnow()))
        upgrade(url, vault=vault)
        rows = asyncio.run(
            _sql(url, "SELECT id, last_status_code, last_error FROM webhook_delivery")
        )
        found = {int(str(row[0])): (row[1], row[2]) for row in rows}
        assert found == dict(enumerate(kept.values()))
        downgrade(url, "0007", vault=vault)
    finally:
        drop_database(name)
