"""Consoles end to end: API → broker → built-in agent → SSH / IPMI SOL → simulated machines.

The flagship: a server whose BMC refuses us is not cycled through its PDU outlet (an AC cut is
harsher than the cycle asked); its operator switches the outlet off and on instead while two
people watch its console server port; the writer sends F2 during POST and lands in BIOS setup,
the other cannot type; the recording replays the same screens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.consoles.casts import cast_output
from tests.factories import device, error, ok, path, site
from tests.sim.fleet import PASSWORD, RunningFleet, launch

F2 = b"\x1b[12~"
pytestmark = pytest.mark.xdist_group("console-e2e")


@pytest.fixture(scope="module")
def rack() -> Iterator[RunningFleet]:
    """Two machines on console server cs1 (opengear) and PDU pdu1 (raritan_px).

    POST lasts 6 s: F2 must arrive before it ends, and on a loaded machine the API's answer to
    a power-on via the outlet (PDU reads, fallback messages) can take seconds.
    """
    fleet = launch(2, "--console-servers", "1", "--console-ports", "2", "--console-dialect",
                   "opengear", "--pdus", "1", "--pdu-outlets", "2", "--pdu-dialect", "raritan_px",
                   "--pdu-cycle-delay", "0.3", "--post-seconds", "6")  # fmt: skip
    yield fleet
    fleet.stop()


@pytest.fixture
def api(settings: Settings, rack: RunningFleet) -> Iterator[TestClient]:
    quiet = settings.model_copy(update={"poll_power": False})
    wiring = rack.control.wiring()
    with TestClient(create_app(quiet), raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        for box in wiring["devices"]:
            kind = "console_server" if box["kind"] == "console_server" else "pdu"
            device(client, box["name"], kind=kind)
            path(client, box["name"], kind="ssh", address=box["address"], port=box["port"],
                 username=box["username"], secret=box["password"],
                 options={"dialect": box["dialect"]})  # fmt: skip
        for n, machine in enumerate(wiring["machines"], start=1):
            rack.control.set_fault(machine["bmc_port"], "refuse_password", False)
            device(client, f"node{n}")
            path(client, f"node{n}", kind="ipmi", address="127.0.0.1", port=machine["bmc_port"],
                 username="admin", secret=PASSWORD, options={"cipher_suite": 3})  # fmt: skip
            path(client, f"node{n}", kind="console_port", via=machine["console"]["server"],
                 port=machine["console"]["port"])  # fmt: skip
            path(client, f"node{n}", kind="pdu_outlet", via=machine["pdu"][0]["pdu"],
                 outlets=[machine["pdu"][0]["outlet"]])  # fmt: skip
        yield client


def _stream(client: TestClient, console: dict[str, Any], mode: str) -> WebSocketTestSession:
    return client.websocket_connect(f"{console['stream']}?mode={mode}")


def _screen_until(ws: WebSocketTestSession, wanted: bytes, events: list[dict[str, Any]]) -> bytes:
    """Output until `wanted` shows; text events met on the way are kept in `events`."""
    seen = b""
    while wanted not in seen:
        message = ws.receive()
        if message.get("text"):
            events.append(json.loads(message["text"]))
        seen += message.get("bytes") or b""
    return seen


def _event(ws: WebSocketTestSession, kind: str) -> dict[str, Any]:
    while True:
        message = ws.receive()
        if message.get("text") and json.loads(message["text"])["type"] == kind:
            return dict(json.loads(message["text"]))


def test_outlet_off_and_on_while_watching_then_f2_into_bios_setup(
    api: TestClient, rack: RunningFleet
) -> None:
    machine = rack.control.wiring()["machines"][0]
    rack.control.set_power(machine["bmc_port"], "on")
    rack.control.set_fault(machine["bmc_port"], "refuse_password", True)  # the BMC is no help
    console = ok(api.post("devices/node1/consoles", json={"via": "console_port"}), 201)
    assert console["path"] == "console_port"
    ssh_path = next(p for p in ok(api.get("devices/cs1/paths")) if p["kind"] == "ssh")
    box = next(d for d in rack.control.wiring()["devices"] if d["name"] == "cs1")
    assert ssh_path["options"]["host_key"] == box["host_key"]  # pinned on first contact

    events: list[dict[str, Any]] = []
    with _stream(api, console, "rw") as writer, _stream(api, console, "ro") as watcher:
        _event(writer, "writer")
        cycled = ok(api.post("devices/node1/power", json={"action": "cycle", "ticket": "INC-9"}))
        assert cycled["status"] == "failed", cycled
        assert "rejected the user or password" in cycled["message"]  # why the BMC did not
        assert "not used: an outlet cycle cuts AC" in cycled["message"]  # and the outlet not
        off = ok(api.post("devices/node1/power", json={"action": "off", "ticket": "INC-9"}))
        assert (off["status"], off["path"], off["power_state"]) == (
            "succeeded",
            "pdu_outlet",
            "off",
        )
        on = ok(api.post("devices/node1/power", json={"action": "on", "ticket": "INC-9"}))
        assert (on["path"], on["power_state"]) == ("pdu_outlet", "unknown")  # AC, not the server
        assert "outlet 1 switched on" in on["message"]
        _screen_until(writer, b"Press <F2>", events)
        writer.send_bytes(F2)
        _screen_until(writer, b"BIOS SETUP UTILITY", events)
        _screen_until(watcher, b"BIOS SETUP UTILITY", events)  # the other viewer sees it too
        watcher.send_bytes(b"\x1b")  # ... and cannot type
        assert _event(watcher, "error")["error"] == "ReadOnly"
    state = rack.control.state(machine["bmc_port"])
    assert state["counters"]["cycle"] == 0  # the BMC refused us; the AC came back on

    ok(api.get(f"consoles/{console['id']}"))
    api.delete(f"consoles/{console['id']}")
    closed = ok(api.get(f"consoles/{console['id']}"))
    cast = api.get(f"consoles/{console['id']}/recording")
    assert hashlib.sha256(cast.content).hexdigest() == closed["recording_sha256"]
    replay = cast_output(cast.content)
    assert "Press <F2>" in replay
    assert replay.index("Press <F2>") < replay.index("BIOS SETUP UTILITY")
    rack.control.set_fault(machine["bmc_port"], "refuse_password", False)


def test_sol_console_and_power_from_the_console(api: TestClient, rack: RunningFleet) -> None:
    machine = rack.control.wiring()["machines"][1]
    rack.control.set_power(machine["bmc_port"], "off")
    console = ok(api.post("devices/node2/consoles", json={"via": "ipmi"}), 201)
    assert console["path"] == "ipmi"
    events: list[dict[str, Any]] = []
    with _stream(api, console, "rw") as ws:
        _event(ws, "writer")
        ws.send_text(json.dumps({"type": "power", "action": "on"}))
        _screen_until(ws, b"Press <F2>", events)
        ws.send_bytes(F2)
        _screen_until(ws, b"BIOS SETUP UTILITY", events)
    done = [e for e in events if e["type"] == "power" and e.get("status") != "running"]
    assert done, events
    assert done[0]["status"] == "succeeded"
    assert done[0]["path"] == "ipmi"
    api.delete(f"consoles/{console['id']}")


def test_a_changed_host_key_is_refused_and_nothing_is_sent(
    api: TestClient, rack: RunningFleet
) -> None:
    ssh_path = next(p for p in ok(api.get("devices/cs1/paths")) if p["kind"] == "ssh")
    wrong = "SHA256:" + "A" * 43
    ok(api.patch(f"devices/cs1/paths/{ssh_path['id']}",
                 json={"options": {"dialect": "opengear", "host_key": wrong}}))  # fmt: skip
    before = rack.control.console_port("cs1", 1)["sessions"]
    response = api.post("devices/node1/consoles", json={"via": "console_port"})
    assert "host key" in error(response, 502)
    assert rack.control.console_port("cs1", 1)["sessions"] == before
    failed = ok(api.get("consoles", params={"device": "node1", "status": "failed"}))["items"]
    events = ok(api.get("audit", params={"type": "console.failed"}))["items"]
    assert failed[0]["id"] in {event["session_id"] for event in events}
