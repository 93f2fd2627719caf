"""A database that stays locked past its wait is a 503 that says to try again, not a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.config import Settings
from app.main import _busy, create_app
from app.migrate import upgrade
from tests.busy import held
from tests.conftest import ADMIN_PASSWORD, SERVICE_KEY, login, new_database_url
from tests.factories import error, ok


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("canceling statement due to lock timeout")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "busy"),
    [
        (OperationalError("INSERT", {}, Exception("database is locked")), True),
        (OperationalError("INSERT", {}, _PgError("55P03")), True),  # lock_not_available
        (OperationalError("INSERT", {}, _PgError("57014")), True),  # lock or statement timeout
        (PoolTimeout("QueuePool limit of size 10 overflow 20 reached"), True),
        (OperationalError("INSERT", {}, Exception("disk I/O error")), False),
        (OperationalError("INSERT", {}, _PgError("42P01")), False),  # a bug: undefined table
    ],
)
def test_only_a_wait_that_ran_out_counts_as_busy(exc: Exception, busy: bool) -> None:
    assert _busy(exc) is busy


# SQLite gives up after its 10 s busy timeout; PostgreSQL waits for the lock's holder. The test
# has a database of its own: a database held locked is no state to hand the next test.
def test_a_write_behind_a_long_lock_is_a_503_and_changes_nothing(tmp_path: Path) -> None:
    url, _ = new_database_url("sqlite", tmp_path)
    upgrade(url)
    settings = Settings(
        database_url=url,
        data_dir=tmp_path,
        secret_key=SERVICE_KEY,
        admin_password=ADMIN_PASSWORD,
        start_workers=False,
        poll_power=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        with held(url, "site"):
            answer = client.post("sites", json={"slug": "x-new", "name": "X"})
            assert "try again in a few seconds" in error(answer, 503)
            assert answer.headers["Retry-After"] == "5"
        assert ok(client.get("sites")) == []
        ok(client.post("sites", json={"slug": "x-new", "name": "X"}), 201)
