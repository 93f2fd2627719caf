"""Fixtures of the CLI tests: a real server and a way to run `rackhand` against it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import empty_database
from tests.live import RACKHAND, admin_token, rackhand_serve


@pytest.fixture
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `rackhand serve` on the test database (started per test: it makes the admin)."""
    with rackhand_serve(database_url, tmp_path_factory.mktemp("serve")) as url:
        yield url


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
    asyncio.run(empty_database(database_url))
