"""Fixtures of the CLI tests: a real server and a way to run `rackhand` against it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.db import make_engine, make_sessionmaker
from app.identity.service import bootstrap_admin
from app.uow import unit_of_work
from tests.conftest import ADMIN_PASSWORD, empty_database
from tests.live import RACKHAND, admin_token, private_ca, rackhand_serve


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `rackhand serve` on the test database, one a module (a start costs seconds of
    CPU): each test leaves the database as the server's start made it (`as_first_started`)."""
    with rackhand_serve(database_url, tmp_path_factory.mktemp("serve")) as url:
        yield url
    asyncio.run(empty_database(database_url))


async def as_first_started(url: str) -> None:
    """The database as a first `rackhand serve` leaves it: empty but for the running server's
    own row in `central`, and the admin made (her creation the first audit event)."""
    await empty_database(url, keep=("central",))
    engine = make_engine(url)
    try:
        async with unit_of_work(make_sessionmaker(engine, write=True)) as session:
            await bootstrap_admin(session, ADMIN_PASSWORD)
    finally:
        await engine.dispose()


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def rackhand(server: str, database_url: str) -> Iterator[Run]:
    token = admin_token(server)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"RACKHAND_URL": server, "RACKHAND_TOKEN": token, "COLUMNS": "200"}
        return subprocess.run(
            [RACKHAND, *args], env=env, capture_output=True, text=True, timeout=60
        )

    auth = {"Authorization": f"Bearer {token}"}
    site = {"slug": "bj-dc1", "name": "Beijing"}
    httpx.post(f"{server}/api/v1/sites", json=site, headers=auth).raise_for_status()
    httpx.post(f"{server}/api/v1/racks", json={"site": "bj-dc1", "name": "A01"}, headers=auth)
    yield run
    asyncio.run(as_first_started(database_url))


def first_run_env(url: str, home: Path) -> dict[str, str]:
    """The environment of someone new at `url`: HOME in `home`, none of our caller's Rackhand,
    TLS or COLUMNS variables."""
    ours = ("RACKHAND_", "SSL_CERT_", "COLUMNS")
    kept = {key: value for key, value in os.environ.items() if not key.startswith(ours)}
    return kept | {"HOME": str(home), "RACKHAND_URL": url}


def runner(url: str, home: Path) -> Run:
    """`rackhand` in `first_run_env`; a call adds variables (`RACKHAND_PASSWORD=...`) and input."""
    env = first_run_env(url, home)

    def run(*args: str, stdin: str = "", **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RACKHAND, *args], env=env | more, input=stdin, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    return run


@pytest.fixture
def newcomer(server: str, database_url: str, tmp_path: Path) -> Iterator[Run]:
    """`rackhand` at the server on a first run: no token, no config.toml yet."""
    yield runner(server, tmp_path / "home")
    asyncio.run(as_first_started(database_url))


@pytest.fixture
def tls_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A real `rackhand serve` over HTTPS, its certificate from a private CA: (URL, CA file)."""
    folder = tmp_path_factory.mktemp("tls")
    ca, cert, key = private_ca(folder)
    with rackhand_serve(database_url, folder / "var", tls=(cert, key)) as url:
        yield url, ca
    asyncio.run(empty_database(database_url))
