"""Console sessions through the API and the WebSocket: sharing, the write lock, recording, audit."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from agents.drivers.base import AuthFailed, Busy
from agents.drivers.fake import FakeDriver
from agents.protocol import IpmiPath
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.consoles.casts import cast_output
from tests.factories import device, error, ok, path, site

BMC = IpmiPath("10.0.0.1", "u", "bmc-secret")


def _open(client: TestClient, device: str = "web01", **body: Any) -> dict[str, Any]:
    response = client.post(f"devices/{device}/consoles", json=body)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _stream(client: TestClient, console: dict[str, Any], mode: str = "rw") -> WebSocketTestSession:
    return client.websocket_connect(f"{console['stream']}?mode={mode}")


def _until(ws: WebSocketTestSession, kind: str) -> dict[str, Any]:
    """Text events until one of `kind` (binary frames in between are skipped)."""
    while True:
        message = ws.receive()
        if message.get("text"):
            event = json.loads(message["text"])
            if event["type"] == kind:
                return dict(event)


def _output_until(ws: WebSocketTestSession, wanted: bytes) -> bytes:
    seen = b""
    while wanted not in seen:
        message = ws.receive()
        seen += message.get("bytes") or b""
    return seen


def _events(client: TestClient, console_id: str) -> list[dict[str, Any]]:
    items = ok(client.get("audit", params={"limit": 500}))["items"]
    return [event for event in items if event.get("session_id") == console_id]


def test_open_watch_type_and_replay(
    consoles: TestClient, fake: FakeDriver, settings: Settings
) -> None:
    fake.machine(BMC).banner = b"POST: memory ok\r\n"
    console = _open(consoles, ticket="INC-7")
    assert console["status"] == "open"
    assert console["path"] == "ipmi"
    assert console["stream"] == f"/api/v1/consoles/{console['id']}/stream"
    with _stream(consoles, console) as ws:
        hello = _until(ws, "hello")
        assert hello["device"] == "web01"
        _output_until(ws, b"POST: memory ok")
        assert _until(ws, "writer")["writer"]["name"] == "admin"  # first rw viewer writes
        ws.send_bytes(b"root\r")
        _output_until(ws, b"root\r")  # the fake echoes like a login prompt
        ws.send_text(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
    assert fake.machine(BMC).consoles[0].written == [b"root\r"]
    response = consoles.delete(f"consoles/{console['id']}")
    assert response.status_code == 204
    closed = ok(consoles.get(f"consoles/{console['id']}"))
    assert closed["status"] == "closed"
    assert closed["close_reason"] == "closed"
    assert fake.machine(BMC).consoles[0].closed

    cast = consoles.get(f"consoles/{console['id']}/recording")
    assert cast.status_code == 200
    assert hashlib.sha256(cast.content).hexdigest() == closed["recording_sha256"]
    header = json.loads(cast.content.splitlines()[0])
    assert header["version"] == 2
    path = Path(settings.data_dir) / "recordings"
    [stored] = list(path.rglob("*.cast"))
    assert cast_output(stored.read_bytes()) == "POST: memory ok\r\nroot\r"

    events = _events(consoles, console["id"])
    kinds = [event["type"] for event in events]
    for kind in ("console.requested", "console.opened", "console.joined", "console.closed",
                 "console.recording_read"):  # fmt: skip
        assert kind in kinds, kinds
    sealed = next(event for event in events if event["type"] == "console.closed")
    assert sealed["details"]["sha256"] == closed["recording_sha256"]
    assert sealed["details"]["size"] == len(cast.content)
    assert sealed["ticket"] == "INC-7"


def test_one_session_per_device_and_one_writer(consoles: TestClient, fake: FakeDriver) -> None:
    console = _open(consoles)
    again = consoles.post("devices/web01/consoles", json={})
    assert again.status_code == 200
    assert again.json()["id"] == console["id"]
    assert len(fake.machine(BMC).consoles) == 1
    with _stream(consoles, console) as alice:
        _until(alice, "writer")
        with _stream(consoles, console) as bob:
            me = _until(bob, "hello")["you"]
            bob.send_bytes(b"rm -rf /\r")
            refused = _until(bob, "error")
            assert refused["error"] == "ReadOnly"
            assert "in use by admin since" in refused["detail"]
            bob.send_text(json.dumps({"type": "take_write"}))
            assert _until(bob, "error")["error"] == "InUse"
            alice.send_text(json.dumps({"type": "release_write"}))
            assert _until(bob, "writer")["writer"] is None
            bob.send_text(json.dumps({"type": "take_write"}))
            assert _until(bob, "writer")["writer"]["viewer"] == me
            bob.send_bytes(b"uptime\r")
            _output_until(alice, b"uptime\r")  # every viewer sees the output
            alice.send_text(json.dumps({"type": "take_write", "force": True}))  # admin take-over
            assert _until(bob, "writer")["forced"] is True
    assert fake.machine(BMC).consoles[0].written == [b"uptime\r"]
    kinds = [event["type"] for event in _events(consoles, console["id"])]
    assert "console.write_forced" in kinds


def test_late_viewer_gets_the_recent_screen(consoles: TestClient, fake: FakeDriver) -> None:
    fake.machine(BMC).banner = b"BIOS SETUP UTILITY\r\n"
    console = _open(consoles)
    with _stream(consoles, console, "ro") as first:
        _output_until(first, b"BIOS SETUP")
        with _stream(consoles, console, "ro") as late:
            _until(late, "hello")
            assert b"BIOS SETUP UTILITY" in late.receive_bytes()


def test_break_needs_confirmation_and_is_audited(consoles: TestClient, fake: FakeDriver) -> None:
    console = _open(consoles, device="web02")
    assert console["path"] == "console_port"
    with _stream(consoles, console) as ws:
        _until(ws, "writer")
        ws.send_text(json.dumps({"type": "break"}))
        assert _until(ws, "error")["error"] == "ConfirmBreak"
        ws.send_text(json.dumps({"type": "break", "confirm": True}))
        assert _until(ws, "break")["by"] == "admin"
    [channel] = next(iter(fake.machines.values())).consoles
    assert channel.breaks == 1
    assert "console.break" in [e["type"] for e in _events(consoles, console["id"])]


def test_device_hanging_up_closes_for_everyone(consoles: TestClient) -> None:
    console = _open(consoles)
    with _stream(consoles, console) as ws:
        _until(ws, "writer")
        ws.send_bytes(b"\x04\x04")
        closed = _until(ws, "closed")
        assert closed["reason"] == "device"
    row = ok(consoles.get(f"consoles/{console['id']}"))
    assert row["status"] == "closed"
    assert row["recording_sha256"]


def test_failures_say_why(consoles: TestClient, fake: FakeDriver) -> None:
    fake.machine(BMC).fail = AuthFailed("BMC 10.0.0.1:623 rejected the password for u")
    response = consoles.post("devices/web01/consoles", json={})
    assert response.status_code == 502
    assert "rejected the password" in error(response, 502)
    [failed] = ok(consoles.get("consoles", params={"device": "web01"}))["items"]
    assert failed["status"] == "failed"
    kinds = [event["type"] for event in _events(consoles, failed["id"])]
    assert "console.failed" in kinds

    consoles.post("devices", json={"name": "bare", "kind": "server", "site": "bj-dc1"})
    missing = consoles.post("devices/bare/consoles", json={})
    assert "has no console path" in error(missing, 422)
    assert "no device 'nope'" in error(consoles.post("devices/nope/consoles", json={}), 404)
    wrong = consoles.post("devices/web01/consoles", json={"via": "telnet"})
    assert wrong.status_code == 422


@pytest.mark.parametrize("token", ["rh_not-a-token", None])
def test_stream_needs_a_caller(consoles: TestClient, token: str | None) -> None:
    console = _open(consoles)
    saved = consoles.headers.pop("Authorization")
    try:
        if token:
            consoles.headers["Authorization"] = f"Bearer {token}"
        with _stream(consoles, console) as ws:
            refused = _until(ws, "error")
            assert refused["error"] == "Unauthenticated"
    finally:
        consoles.headers["Authorization"] = saved


def test_an_over_long_ticket_on_the_stream_is_refused(consoles: TestClient) -> None:
    """The WebSocket's X-Ticket went unchecked into the audit (128 characters on PostgreSQL):
    it is held to the HTTP routes' rule, refused before the viewer joins."""
    console = _open(consoles)
    with consoles.websocket_connect(console["stream"], headers={"X-Ticket": "T" * 300}) as ws:
        refused = json.loads(ws.receive_text())  # before any "hello": the viewer never joined
        assert refused["error"] == "InvalidInput"
        assert "X-Ticket takes at most 128 characters" in refused["detail"]
        assert ws.receive()["code"] == 4400
    with consoles.websocket_connect(console["stream"], headers={"X-Ticket": "INC-9"}) as ws:
        _until(ws, "writer")
    joined = [e for e in _events(consoles, console["id"]) if e["type"] == "console.joined"]
    assert [event["ticket"] for event in joined] == ["INC-9"]


def test_a_console_server_with_a_long_host_name_opens(consoles: TestClient) -> None:
    """A 253-character host name, its port and the console port make an endpoint longer than
    its column: it is shortened, as metadata, and the console opens."""
    host = ".".join(["a" * 63] * 3 + ["b" * 61])
    device(consoles, "cs-02", kind="console_server")
    path(consoles, "cs-02", kind="ssh", address=host, username="admin", secret="cs-pw",
         options={"dialect": "opengear"})  # fmt: skip
    device(consoles, "web03")
    path(consoles, "web03", kind="console_port", via="cs-02", port=4000)
    console = _open(consoles, "web03")
    assert console["status"] == "open"
    assert console["endpoint"] == f"{host}:22/port4000"[:254] + "…"


def test_a_busy_port_is_a_conflict(consoles: TestClient, fake: FakeDriver) -> None:
    fake.machine(BMC).fail = Busy("BMC 10.0.0.1:623: another SOL session is active on this BMC")
    response = consoles.post("devices/web01/consoles", json={"via": "ipmi"})
    assert "another SOL session" in error(response, 409)


def test_a_session_nobody_watches_closes(settings: Settings, fake: FakeDriver) -> None:
    brief = settings.model_copy(update={"poll_power": False, "console_linger_seconds": 0.4})
    app = create_app(brief, drivers={"ipmi": fake})
    with TestClient(app) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        device(client, "web01")
        path(client, "web01", kind="ipmi", address="10.0.0.1", username="u", secret="s")
        console = _open(client)
        with _stream(client, console) as ws:
            _until(ws, "writer")
        deadline = time.monotonic() + 10
        while ok(client.get(f"consoles/{console['id']}"))["status"] == "open":
            assert time.monotonic() < deadline, "the unwatched session stayed open"
            time.sleep(0.1)
        row = ok(client.get(f"consoles/{console['id']}"))
        assert row["close_reason"] == "unwatched"
        assert fake.machine(BMC).consoles[0].closed
