"""Shared fixtures: every database test runs on SQLite and on PostgreSQL, schema by migrations."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Literal

import asyncpg
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.audit.models import GENESIS
from app.config import Settings
from app.db import Base, make_engine
from app.identity import secrets
from app.main import create_app
from app.migrate import upgrade
from app.models import load_all
from app.vault import generate_key

POSTGRES = os.environ.get("RACKHAND_TEST_POSTGRES", "postgres@127.0.0.1:5432")
SERVICE_KEY = generate_key()
ADMIN_PASSWORD = "admin-password-for-tests"


class HashedOnce(PasswordHasher):
    """The app's argon2, except for passwords the tests use as mere keys: each hashed once a
    run, and that hash's check remembered. Nearly every test starts an app (which creates the
    admin) and logs in as the admin, and the page tests log their people in, runs of argon2
    (~0.2 s of CPU each) that test nothing; every other password (the tests of logins,
    throttling and timing among them) runs argon2 in full, as does a wrong password."""

    def __init__(self) -> None:
        super().__init__()
        self._known: dict[str | bytes, str] = {}
        self.remember(ADMIN_PASSWORD)

    def remember(self, password: str) -> None:
        """Hash `password` once from now on (the bootstrap admin's always is)."""
        if password not in self._known:
            self._known[password] = super().hash(password)

    def forget(self, password: str) -> None:
        if password != ADMIN_PASSWORD:
            self._known.pop(password, None)

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        known = self._known.get(password)
        if known is not None and salt is None:
            return known
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        if self._known.get(password) == hash:
            return True
        return super().verify(hash, password)


@pytest.fixture(scope="session", autouse=True)
def hashed_once() -> Iterator[HashedOnce]:
    hasher = HashedOnce()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(secrets, "_hasher", hasher)
        yield hasher


def _postgres_dsn(database: str) -> str:
    return f"postgresql://{POSTGRES}/{database}"


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(_postgres_dsn("postgres"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def new_database_url(backend: str, folder: Path) -> tuple[str, str | None]:
    """A throwaway empty database: (url, PostgreSQL database name to drop later)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{folder / f'{uuid.uuid4().hex[:8]}.db'}", None
    name = f"rackhand_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return f"postgresql+asyncpg://{POSTGRES}/{name}", name


def drop_database(name: str | None) -> None:
    if name is not None:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One migrated database per backend and test worker, emptied after each test."""
    url, name = new_database_url(request.param, tmp_path_factory.mktemp("db"))
    upgrade(url)
    yield url
    drop_database(name)


# What TRUNCATE … RESTART IDENTITY would do to the ids, after DELETEs: TRUNCATE makes new files
# for every table and its indexes, several times slower than deleting a test's few rows.
RESTART_SEQUENCES = """
SELECT setval(seq.oid, 1, false) FROM pg_class seq
JOIN pg_depend owner ON owner.objid = seq.oid AND owner.deptype IN ('a', 'i')
JOIN pg_class tab ON tab.oid = owner.refobjid
WHERE seq.relkind = 'S' AND tab.relname <> 'audit_head'
"""


async def empty_database(url: str, keep: Collection[str] = ()) -> None:
    """Remove every row (tests share one migrated database per backend and worker), but those
    of the tables in `keep`."""
    load_all()
    engine = make_engine(url)
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]  # children first
    async with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            await connection.execute(text("PRAGMA defer_foreign_keys=ON"))
        for table in tables:
            if table != "audit_head" and table not in keep:
                await connection.execute(text(f"DELETE FROM {table}"))
        if connection.dialect.name == "postgresql":
            await connection.execute(text(RESTART_SEQUENCES))
        await connection.execute(text(f"UPDATE audit_head SET seq = 0, hash = '{GENESIS}'"))
    await engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Iterator[Settings]:
    yield Settings(
        database_url=database_url,
        data_dir=tmp_path,
        secret_key=SERVICE_KEY,
        admin_password=ADMIN_PASSWORD,
        start_workers=False,  # most tests never reach a device: workers start at first use
    )
    asyncio.run(empty_database(database_url))


def login(client: TestClient, username: str, password: str) -> str:
    """A bearer token for `username`, through the OAuth2 password flow."""
    response = client.post("auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def anonymous(settings: Settings) -> Iterator[TestClient]:
    """A client of a started app, without credentials."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        test_client.base_url = test_client.base_url.join("/api/v1/")
        yield test_client


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """Logged in as the bootstrap admin (every role on every site)."""
    token = login(anonymous, "admin", ADMIN_PASSWORD)
    anonymous.headers["Authorization"] = f"Bearer {token}"
    return anonymous
