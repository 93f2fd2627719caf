"""Health end to end: API → built-in agent → pyghmi → our simulated BMCs, over IPMI and Redfish.

A fan fails and a power supply fails while the health poll runs; the verdict changes once, is
audited and queued for the site's webhook; the event log shows the crossing; a Redfish BMC
answers in the same shapes as an IPMI one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, site
from tests.sim.fleet import PASSWORD, RunningFleet, launch, redfish_sim

COUNT = 3
pytestmark = pytest.mark.xdist_group("power-e2e")


@pytest.fixture(scope="module")
def bmcs() -> Iterator[RunningFleet]:
    fleet = launch(COUNT)
    yield fleet
    fleet.stop()


@pytest.fixture(scope="module")
def redfish_bmc() -> Iterator[tuple[str, str]]:
    with redfish_sim() as bmc:
        yield bmc


@pytest.fixture
def api(settings: Settings, bmcs: RunningFleet) -> Iterator[TestClient]:
    """The real app (real drivers); srv01..srv03 on the simulated BMCs, powered on, healthy."""
    quiet = settings.model_copy(update={"poll_power": False, "poll_health": False})
    with TestClient(create_app(quiet), raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        for n in range(COUNT):
            port = bmcs.base + n
            bmcs.control.set_power(port, "on")
            bmcs.control.reset_sensors(port)
            device(client, f"srv{n + 1:02d}")
            path(client, f"srv{n + 1:02d}", kind="ipmi", address="127.0.0.1", port=port,
                 username="admin", secret=PASSWORD)  # fmt: skip
        yield client


def by_name(read: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {sensor["name"]: sensor for sensor in read["sensors"]}


def test_a_fan_and_a_power_supply_failing_while_the_poll_runs(
    api: TestClient, bmcs: RunningFleet
) -> None:
    hook = {"url": "https://hooks.example.net/rackhand", "secret": "s" * 32,
            "events": ["device.health_changed"]}  # fmt: skip
    ok(api.post("webhooks", json=hook), 201)
    poller = api.app.state.health_poller  # type: ignore[attr-defined]
    assert api.portal.call(poller.poll_once) == COUNT  # type: ignore[union-attr]
    assert {d["health"] for d in ok(api.get("devices"))["items"]} == {"ok"}

    port = bmcs.base + 1
    bmcs.control.set_sensor(port, "Fan2", 0)
    bmcs.control.set_psu(port, "PSU2", "failed")
    bmcs.control.set_sensor(bmcs.base + 2, "Inlet Temp", 39)  # past upper non-critical (38)
    api.portal.call(poller.poll_once)  # type: ignore[union-attr]
    warm = ok(api.get("devices/srv03/health", params={"cached": "true"}))
    assert (warm["health"], warm["reasons"]) == (
        "warning",
        ["Inlet Temp warning: 39 °C (upper non-critical 38 °C)"],
    )
    verdict = ok(api.get("devices/srv02/health", params={"cached": "true"}))
    assert verdict["health"] == "critical"
    assert any(reason.startswith("Fan2 critical: 0 RPM") for reason in verdict["reasons"])
    assert any(reason.startswith("PSU2 critical") for reason in verdict["reasons"])
    api.portal.call(poller.poll_once)  # type: ignore[union-attr]
    changed = ok(api.get("audit", params={"type": "health.changed"}))["items"]
    assert {(e["target_name"], e["details"]["after"]) for e in changed} == {
        ("srv02", "critical"),
        ("srv03", "warning"),
    }  # once each, though polled twice
    [webhook] = ok(api.get("webhooks"))
    deliveries = ok(api.get(f"webhooks/{webhook['id']}/deliveries"))["items"]
    assert [d["event"] for d in deliveries] == ["device.health_changed"] * 2

    events = ok(api.get("devices/srv02/events"))["events"]
    fan_events = [e for e in events if e["sensor"] == "Fan2" and e["asserted"]]
    assert fan_events
    assert fan_events[0]["severity"] == "critical"
    bmcs.control.reset_sensors(port)
    bmcs.control.set_psu(port, "PSU2", "ok")
    api.portal.call(poller.poll_once)  # type: ignore[union-attr]
    assert ok(api.get("devices/srv02/health", params={"cached": "true"}))["health"] == "ok"


def test_sensors_events_clear_and_inventory_over_ipmi(api: TestClient, bmcs: RunningFleet) -> None:
    read = ok(api.get("devices/srv01/sensors"))
    sensors = by_name(read)
    assert read["health"] == "ok"
    assert sensors["Inlet Temp"]["unit"] == "°C"
    assert sensors["Fan1"]["thresholds"]["lower_critical"] == 600.0
    assert sensors["12V"]["reading"] == pytest.approx(12.06, abs=0.2)
    assert ok(api.get("devices/srv01/events"))["events"]
    cleared = ok(api.post("devices/srv01/events/clear"))
    assert cleared["cleared"]
    assert cleared["events"]
    left = ok(api.get("devices/srv01/events"))["events"]
    assert len(left) <= 1  # at most the BMC's own "log cleared" entry
    inventory = ok(api.get("devices/srv01/inventory"))
    system = inventory["frus"][0]
    assert system["product"]["manufacturer"] == "Rackhand"
    fields = {change["field"] for change in inventory["changes"]}
    assert fields == {"vendor", "model", "serial"}  # the catalogue knows none of them yet
    ok(api.post("devices/srv01/inventory/apply"))
    assert ok(api.get("devices/srv01"))["serial"] == system["product"]["serial_number"]


def test_a_redfish_bmc_answers_in_the_same_shapes(
    api: TestClient, redfish_bmc: tuple[str, str]
) -> None:
    url, fingerprint = redfish_bmc
    device(api, "rf01")
    path(api, "rf01", kind="redfish", address=url, username="admin", secret="redfish-pw",
         options={"tls_fingerprint": fingerprint})  # fmt: skip
    read = ok(api.get("devices/rf01/sensors"))
    assert read["path"] == "redfish"
    sensors = by_name(read)
    temperatures = [s for s in sensors.values() if s["type"] == "Temperature"]
    assert temperatures
    assert all(s["unit"] == "°C" for s in temperatures if s["reading"] is not None)
    assert {s["state"] for s in temperatures if s["reading"] is None} <= {"not_present"}
    assert any(s["type"] == "Fan" and s["thresholds"] for s in sensors.values())
    events = ok(api.get("devices/rf01/events"))["events"]
    assert events
    assert {"id", "time", "severity", "message"} <= set(events[0])
    inventory = ok(api.get("devices/rf01/inventory"))
    assert inventory["frus"][0]["product"]["serial_number"]
    cleared = ok(api.post("devices/rf01/events/clear"))
    assert cleared["cleared"]
