"""A token's `last_used_at` is a note, written off the request's path: a locked database
neither fails nor holds up a request made with the token."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from app.config import Settings
from tests.busy import held
from tests.factories import ok


def _last_used(client: TestClient, token_id: int) -> object:
    return next(t for t in ok(client.get("tokens")) if t["id"] == token_id)["last_used_at"]


def test_a_read_with_a_token_answers_while_the_database_is_write_locked(
    client: TestClient, settings: Settings
) -> None:
    made = ok(client.post("tokens", json={"name": "inventory-sync", "role": "viewer"}), 201)
    script = {"Authorization": f"Bearer {made['token']}"}
    # SQLite: another connection holds the write lock; PostgreSQL: writes to api_token wait.
    with held(settings.database_url, "api_token", mode="EXCLUSIVE", at_most=12):
        started = time.monotonic()
        answer = client.get("sites", headers=script)
        took = time.monotonic() - started
    assert answer.status_code == 200, answer.text  # was a 500 after SQLite's 10 s busy timeout
    assert took < 5  # was held until the lock ended (PostgreSQL) or 10 s (SQLite)
    deadline = time.monotonic() + 20
    while _last_used(client, made["id"]) is None:  # noted once the database takes it
        assert time.monotonic() < deadline, "the use was never recorded"
        time.sleep(0.05)
