"""The poller keeps power state fresh and reports a change nobody asked Rackhand for."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from agents.drivers.base import Unreachable
from agents.drivers.fake import FakeDriver
from agents.protocol import IpmiPath, PowerState
from app.inventory.models import Device, PowerStatus
from tests.factories import device, ok, path, poll_power


def _devices(client: TestClient) -> dict[str, Any]:
    return {d["name"]: d for d in ok(client.get("devices"))["items"]}


def test_poll_stores_state_and_reports_drift(fleet: TestClient, fake: FakeDriver) -> None:
    web01 = fake.machine(IpmiPath("10.0.0.1", "u", "x"))
    web01.power = PowerState.ON
    fake.machine(IpmiPath("10.0.0.2", "u", "x")).fail = Unreachable("did not answer")
    assert poll_power(fleet) == 5
    devices = _devices(fleet)
    assert devices["web01"]["power_state"] == "on"
    assert devices["web03"]["power_state"] == "off"
    assert devices["web02"]["power_state"] == "unknown"
    assert ok(fleet.get("audit", params={"type": "power.drift"}))["items"] == []

    web01.power = PowerState.OFF  # someone pressed the button
    poll_power(fleet)
    assert _devices(fleet)["web01"]["power_state"] == "off"
    drift = ok(fleet.get("audit", params={"type": "power.drift"}))["items"]
    assert [(e["target_name"], e["details"]) for e in drift] == [
        ("web01", {"before": "on", "after": "off", "seen_by": "poller"})
    ]
    assert drift[0]["actor_kind"] == "system"


def test_a_change_made_through_rackhand_is_not_drift(fleet: TestClient, fake: FakeDriver) -> None:
    poll_power(fleet)
    ok(fleet.post("devices/web03/power", json={"action": "on"}))
    poll_power(fleet)
    assert _devices(fleet)["web03"]["power_state"] == "on"
    assert ok(fleet.get("audit", params={"type": "power.drift"}))["items"] == []


def test_sites_with_polling_off_are_left_alone(fleet: TestClient) -> None:
    ok(fleet.patch("sites/bj-dc1", json={"poll_seconds": 0}))
    assert poll_power(fleet) == 0


async def _status_rows(client: TestClient) -> dict[str, tuple[str, bool, str]]:
    sessions = client.app.state.sessions  # type: ignore[attr-defined]
    async with sessions() as session:
        rows = await session.execute(
            select(Device.name, PowerStatus.state, PowerStatus.reachable, PowerStatus.message).join(
                PowerStatus, PowerStatus.device_id == Device.id
            )
        )
        return {name: (state, reachable, message) for name, state, reachable, message in rows}


def test_an_outlet_of_a_pdu_without_ssh_is_reported_and_the_round_goes_on(
    fleet: TestClient, fake: FakeDriver
) -> None:
    """Such a device has a power path the agent cannot use: the poll used to stop the whole
    round on it (KeyError). It is stored as unknown with what to fix; the others are polled."""
    fake.machine(IpmiPath("10.0.0.5", "u", "x")).power = PowerState.ON
    device(fleet, "pdu-a1", kind="pdu")  # no ssh path: its outlets cannot be switched or read
    device(fleet, "aaa01")  # sorts first: polled before the web servers
    path(fleet, "aaa01", kind="pdu_outlet", via="pdu-a1", outlets=[3])
    assert poll_power(fleet) == 5  # orders sent: the web servers'
    rows = fleet.portal.call(_status_rows, fleet)  # type: ignore[union-attr]
    assert rows["web05"] == ("on", True, "")
    assert len(rows) == 6
    state, reachable, message = rows["aaa01"]
    assert (state, reachable) == ("unknown", False)
    assert "PDU pdu-a1 has no ssh control path" in message
    assert _devices(fleet)["aaa01"]["power_state"] == "unknown"
    assert poll_power(fleet) == 5  # and again on the next round
