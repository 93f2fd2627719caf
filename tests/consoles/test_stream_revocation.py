"""Live streams re-check their caller: a revoked token or an ended session closes them."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from agents.drivers.fake import FakeDriver
from agents.protocol import IpmiPath
from app.config import Settings
from app.identity import service as identity_service
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import ok

RECHECK = 0.2  # s between checks in these tests (5 s in service)
BOUND = 5.0  # s the stream may take to close, with room for a loaded machine


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"stream_recheck_seconds": RECHECK})


def _closed_within(ws: WebSocketTestSession, seconds: float) -> tuple[list[Any], dict[str, Any]]:
    """The text events the server sends until it closes the socket, and the close message;
    fails if it is still open after `seconds` (a reader thread, so a broken check cannot
    hang the test)."""
    seen: list[Any] = []
    closed: dict[str, Any] = {}

    def read() -> None:
        while True:
            message = ws.receive()
            if message["type"] == "websocket.close":
                closed.update(message)
                return
            if message.get("text"):
                seen.append(json.loads(message["text"]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert closed, f"the stream was still open {seconds} s later; it sent {seen}"
    return seen, closed


def _hello(ws: WebSocketTestSession) -> None:
    while True:
        message = ws.receive()
        if message.get("text") and json.loads(message["text"])["type"] == "hello":
            return


def test_a_console_stream_ends_when_its_token_is_revoked(consoles: TestClient) -> None:
    console = ok(consoles.post("devices/web01/consoles", json={}), 201)
    made = {"name": "console-bot", "role": "operator", "sites": ["bj-dc1"]}
    token = ok(consoles.post("tokens", json=made), 201)
    bot = {"Authorization": f"Bearer {token['token']}"}
    with consoles.websocket_connect(console["stream"], headers=bot) as ws:
        _hello(ws)
        ok(consoles.delete(f"tokens/{token['id']}"), 204)
        revoked_at = time.monotonic()
        events, closed = _closed_within(ws, BOUND)
        took = time.monotonic() - revoked_at
    assert (closed["code"], closed["reason"]) == (4401, "token revoked")
    assert events[-1]["error"] == "Unauthenticated"
    assert "token revoked" in events[-1]["detail"]
    assert took < BOUND
    left = ok(consoles.get("audit", params={"type": "console.left"}))["items"]
    assert left[0]["actor_name"] == "admin/console-bot"
    assert left[0]["details"] == {"why": "token revoked"}
    assert ok(consoles.get(f"consoles/{console['id']}"))["viewers"] == []


def test_a_console_stream_ends_with_its_dashboard_session(consoles: TestClient) -> None:
    console = ok(consoles.post("devices/web01/consoles", json={}), 201)
    login = consoles.post("auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    csrf = ok(login)["csrf_token"]
    cookie = {"Cookie": f"rackhand_session={login.cookies['rackhand_session']}"}
    consoles.cookies.clear()
    page = cookie | {"Origin": "http://testserver", "Authorization": ""}
    with consoles.websocket_connect(console["stream"], headers=page) as ws:
        _hello(ws)
        ok(consoles.post("auth/logout", headers=cookie | {"X-CSRF-Token": csrf,
                                                          "Authorization": ""}), 204)  # fmt: skip
        _, closed = _closed_within(ws, BOUND)
    assert (closed["code"], closed["reason"]) == (4401, "session ended")


def test_a_console_stream_ends_when_the_role_is_withdrawn(consoles: TestClient) -> None:
    console = ok(consoles.post("devices/web01/consoles", json={}), 201)
    bob = {"username": "bob", "password": "bob-password-12", "grants": [{"role": "operator"}]}
    ok(consoles.post("users", json=bob), 201)
    his = {"Authorization": f"Bearer {login(consoles, 'bob', 'bob-password-12')}"}
    with consoles.websocket_connect(console["stream"], headers=his) as ws:
        _hello(ws)
        ok(consoles.patch("users/bob", json={"grants": [{"role": "viewer"}]}))
        events, closed = _closed_within(ws, BOUND)
    assert (closed["code"], closed["reason"]) == (4403, "access withdrawn")
    assert "operator role" in events[-1]["detail"]


def test_a_job_event_stream_ends_when_its_token_is_revoked(
    consoles: TestClient, fake: FakeDriver
) -> None:
    fake.machine(IpmiPath("10.0.0.1", "u", "bmc-secret")).delay = 30.0  # still running
    job = ok(consoles.post("power", json={"select": "web01", "action": "on"}), 202)
    token = ok(consoles.post("tokens", json={"name": "watcher", "role": "viewer"}), 201)
    revoke = threading.Timer(0.5, lambda: consoles.delete(f"tokens/{token['id']}"))
    started = time.monotonic()
    revoke.start()
    watcher = {"Authorization": f"Bearer {token['token']}"}
    with consoles.stream("GET", f"jobs/{job['id']}/events", headers=watcher) as stream:
        lines = [line for line in stream.iter_lines() if line]
    took = time.monotonic() - started
    revoke.join()
    events = [
        (kind.removeprefix("event: "), orjson.loads(data.removeprefix("data: ")))
        for kind, data in itertools.pairwise(lines)
        if kind.startswith("event: ")
    ]
    assert events[0][0] == "job"
    assert events[-1] == (
        "closed",
        {
            "reason": "token revoked",
            "error": "Unauthenticated",
            "detail": "token revoked: log in again",
        },
    )
    assert took < BOUND
    ok(consoles.post(f"jobs/{job['id']}/cancel"))


def test_a_console_stream_whose_caller_cannot_be_rechecked_ends(
    consoles: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: revoke nothing, just keep the database too busy to answer the re-check; the
    stream used to keep its writer for good once one check had failed."""
    console = ok(consoles.post("devices/web01/consoles", json={}), 201)
    with consoles.websocket_connect(console["stream"]) as ws:
        _hello(ws)

        async def unavailable(*_: object) -> None:
            raise TimeoutError("QueuePool limit reached")

        monkeypatch.setattr(identity_service, "refresh", unavailable)
        events, closed = _closed_within(ws, BOUND)
    assert closed["code"] == 1011
    assert "could not be re-checked" in events[-1]["detail"]
