"""The health API's rules on the fake driver: verdicts, their events and webhooks, roles and
site scope (each attack performed), tickets, the catalogue copy, the fleet read and the poll.
The same reads against real BMCs are in test_health_bmcs.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.drivers.base import Unreachable
from agents.drivers.fake import FakeDriver
from agents.protocol import (
    Fru,
    FruArea,
    Health,
    LogEvent,
    Sensor,
    SensorState,
    Thresholds,
)
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, error, ok, path, site

FAN_LIMITS = Thresholds(lower_critical=500.0, lower_non_critical=800.0)


def fan(rpm: float) -> Sensor:
    state = SensorState.CRITICAL if rpm <= 500 else SensorState.OK
    states = ("lower critical threshold",) if rpm <= 500 else ()
    return Sensor("Fan2", "Fan", state, rpm, "RPM", states, FAN_LIMITS)


def sensors(rpm: float = 5400.0) -> list[Sensor]:
    return [
        Sensor("Inlet Temp", "Temperature", SensorState.OK, 23.0, "°C"),
        fan(rpm),
        Sensor("PSU2", "Power Supply", SensorState.NOT_PRESENT),
    ]


@pytest.fixture
def fake() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def api(settings: Settings, fake: FakeDriver) -> Iterator[TestClient]:
    """Admin client; bj-dc1 with web01..web03 (ipmi 10.0.0.N), sh-br12 (tickets required) with
    br01, and sw01 without a BMC; every BMC's fan turning."""
    quiet = settings.model_copy(update={"poll_power": False, "poll_health": False})
    with TestClient(create_app(quiet, drivers={"ipmi": fake}), raise_server_exceptions=False) as c:
        c.base_url = c.base_url.join("/api/v1/")
        c.headers["Authorization"] = f"Bearer {login(c, 'admin', ADMIN_PASSWORD)}"
        site(c, "bj-dc1")
        site(c, "sh-br12", kind="branch", require_ticket=True)
        for name, where, n in (("web01", "bj-dc1", 1), ("web02", "bj-dc1", 2),
                               ("web03", "bj-dc1", 3), ("br01", "sh-br12", 4)):  # fmt: skip
            device(c, name, site=where)
            path(c, name, kind="ipmi", address=f"10.0.0.{n}", username="u", secret="pw")
            fake.machine(bmc(n)).sensors = sensors()
        device(c, "sw01", kind="network")
        yield c


class _Bmc:
    def __init__(self, n: int) -> None:
        self.endpoint = f"10.0.0.{n}:623"


def bmc(n: int) -> Any:
    return _Bmc(n)


def as_user(client: TestClient, name: str, role: str, where: str) -> str:
    """Log `name` in with `role` at `where`; returns the admin's header to switch back."""
    body = {"username": name, "password": "a-password-123",
            "grants": [{"role": role, "sites": [where]}]}  # fmt: skip
    ok(client.post("users", json=body), 201)
    admin: str = client.headers["Authorization"]
    client.headers["Authorization"] = f"Bearer {login(client, name, 'a-password-123')}"
    return admin


def audit(client: TestClient, kind: str) -> list[dict[str, Any]]:
    return ok(client.get("audit", params={"type": kind}))["items"]  # type: ignore[no-any-return]


def test_sensors_give_the_verdict_which_the_device_list_filters_on(
    api: TestClient, fake: FakeDriver
) -> None:
    fake.machine(bmc(2)).sensors = sensors(rpm=0)
    read = ok(api.get("devices/web02/sensors"))
    assert (read["health"], read["path"]) == ("critical", "ipmi")
    assert read["reasons"] == ["Fan2 critical: 0 RPM (lower critical 500 RPM)"]
    fan2 = next(s for s in read["sensors"] if s["name"] == "Fan2")
    assert fan2["thresholds"]["lower_critical"] == 500.0
    assert fan2["unit"] == "RPM"
    ok(api.get("devices/web01/sensors"))
    listed = ok(api.get("devices", params={"health": "critical"}))["items"]
    assert [d["name"] for d in listed] == ["web02"]
    unknown = ok(api.get("devices", params={"health": "unknown"}))["items"]
    assert {d["name"] for d in unknown} == {"web03", "br01", "sw01"}  # never read
    assert ok(api.get("devices/web01"))["health"] == "ok"
    verdict = ok(api.get("devices/web02/health", params={"cached": "true"}))
    assert verdict["health"] == "critical"
    assert verdict["checked_at"]


def test_a_verdict_that_changes_is_audited_once_and_a_healthy_first_read_is_no_news(
    api: TestClient, fake: FakeDriver
) -> None:
    ok(api.get("devices/web01/health"))
    assert audit(api, "health.changed") == []
    fake.machine(bmc(1)).sensors = sensors(rpm=0)
    assert ok(api.get("devices/web01/health"))["health"] == "critical"
    ok(api.get("devices/web01/health"))  # still critical: no second event
    [changed] = audit(api, "health.changed")
    assert changed["target_name"] == "web01"
    assert changed["details"]["before"] == "ok"
    assert changed["details"]["after"] == "critical"
    assert changed["details"]["seen_by"] == "read"


def test_a_bmc_that_does_not_answer_is_a_502_and_an_unknown_verdict_saying_why(
    api: TestClient, fake: FakeDriver
) -> None:
    ok(api.get("devices/web03/sensors"))
    fake.machine(bmc(3)).fail = Unreachable("BMC 10.0.0.3:623: no answer")
    assert "no answer" in error(api.get("devices/web03/sensors"), 502)
    stale = ok(api.get("devices/web03/health", params={"cached": "true"}))
    assert stale["health"] == "ok"  # one lost answer is no news
    assert stale["message"].startswith("the last read failed (1 of 3 before unknown)")
    error(api.get("devices/web03/sensors"), 502)
    error(api.get("devices/web03/sensors"), 502)
    [changed] = audit(api, "health.changed")
    assert (changed["details"]["before"], changed["details"]["after"]) == ("ok", "unknown")
    verdict = ok(api.get("devices/web03/health", params={"cached": "true"}))
    assert verdict["health"] == "unknown"
    assert "no answer" in verdict["message"]


def test_a_device_without_a_bmc_path_is_told_what_to_add(api: TestClient) -> None:
    assert "no BMC path" in error(api.get("devices/sw01/sensors"), 422)
    listed = ok(api.get("health", params={"select": "sw01", "cached": "true"}))
    assert listed["devices"][0]["message"].startswith("no BMC path")


def test_the_event_log_is_read_newest_first_and_cleared_by_an_operator_with_its_ticket(
    api: TestClient, fake: FakeDriver
) -> None:
    machine = fake.machine(bmc(4))
    machine.events = [
        LogEvent("1", "2026-12-01T10:00:00Z", Health.CRITICAL, "Lower Critical going low", "Fan2"),
        LogEvent("2", "2026-12-01T10:05:00Z", Health.OK, "Lower Critical going low", "Fan2",
                 asserted=False),
    ]  # fmt: skip
    assert [e["id"] for e in ok(api.get("devices/br01/events"))["events"]] == ["2", "1"]
    assert "ticket" in error(api.post("devices/br01/events/clear"), 422)
    assert len(machine.events) == 2  # refused before the BMC was asked
    body = {"ticket": "OPS-7", "reason": "Lüfter getauscht"}  # not Latin-1-only: a body
    cleared = ok(api.post("devices/br01/events/clear", json=body))
    assert cleared["cleared"]
    assert len(cleared["events"]) == 2
    assert machine.events == []
    [entry] = audit(api, "health.events_cleared")
    assert (entry["ticket"], entry["details"]["entries"]) == ("OPS-7", 2)
    assert entry["reason"] == "Lüfter getauscht"


def test_a_viewer_cannot_clear_and_another_sites_operator_cannot_see(
    api: TestClient, fake: FakeDriver
) -> None:
    fake.machine(bmc(1)).events = [LogEvent("1", None, Health.WARNING, "Going high")]
    admin = as_user(api, "view1", "viewer", "bj-dc1")
    assert len(ok(api.get("devices/web01/events"))["events"]) == 1  # a viewer reads
    error(api.post("devices/web01/events/clear"), 403)
    error(api.post("devices/web01/inventory/apply"), 403)
    api.headers["Authorization"] = admin
    as_user(api, "brop", "operator", "sh-br12")
    for url in ("devices/web01/sensors", "devices/web01/events", "devices/web01/inventory"):
        assert "web01" in error(api.get(url), 404)  # as if it did not exist
    error(api.post("devices/web01/events/clear", headers={"X-Ticket": "X-1"}), 404)
    assert [d["device"] for d in ok(api.get("health", params={"cached": "true"}))["devices"]] == [
        "br01"
    ]
    # A fresh fleet read naming the other site's devices reads only its own site's BMCs.
    fresh = ok(api.get("health", params={"select": "web01,br01"}))
    assert [d["device"] for d in fresh["devices"]] == ["br01"]
    assert fake.machine(bmc(4)).actions == ["health sensors"]
    assert fake.machine(bmc(1)).events  # nothing cleared by anyone
    assert fake.machine(bmc(1)).actions == ["health events"]  # nor asked for them


def test_fru_data_is_shown_as_a_diff_and_copied_by_an_admin(
    api: TestClient, fake: FakeDriver
) -> None:
    fake.machine(bmc(1)).inventory = [
        Fru(0, "System", board=FruArea("Acme", "X11", serial_number="B-1"),
            product=FruArea("Acme Corp", "R100", "R100-A", serial_number="SN0042")),
    ]  # fmt: skip
    ok(api.patch("devices/web01", json={"vendor": "Acme Corp", "model": "r100"}))
    read = ok(api.get("devices/web01/inventory"))
    assert read["frus"][0]["product"]["serial_number"] == "SN0042"
    changes = {c["field"]: (c["catalogue"], c["fru"]) for c in read["changes"]}
    assert changes == {"model": ("r100", "R100"), "serial": ("", "SN0042")}
    dry = ok(api.post("devices/web01/inventory/apply", params={"dry_run": "true"}))
    assert dry["dry_run"]
    assert ok(api.get("devices/web01"))["serial"] == ""
    ok(api.post("devices/web01/inventory/apply"))
    after = ok(api.get("devices/web01"))
    assert (after["model"], after["serial"]) == ("R100", "SN0042")
    updated = audit(api, "device.updated")[0]  # newest first
    assert updated["target_name"] == "web01"
    assert "serial" in str(updated["details"])
    assert ok(api.get("devices/web01/inventory"))["changes"] == []


def test_the_fleet_read_gives_every_verdict_and_counts(api: TestClient, fake: FakeDriver) -> None:
    fake.machine(bmc(3)).sensors = sensors(rpm=0)
    fleet = ok(api.get("health", params={"select": "web[01-03]"}))
    assert [(d["device"], d["health"]) for d in fleet["devices"]] == [
        ("web01", "ok"),
        ("web02", "ok"),
        ("web03", "critical"),
    ]
    assert fleet["counts"] == {"ok": 2, "warning": 0, "critical": 1, "unknown": 0}
    stored = ok(api.get("health", params={"site": "bj-dc1", "cached": "true"}))
    assert stored["counts"]["critical"] == 1
    assert all(m.actions.count("health sensors") == 1 for m in fake.machines.values()
               if m.sensors and m is not fake.machine(bmc(4)))  # fmt: skip


def test_the_poll_reads_every_site_and_announces_a_fan_that_stops(
    api: TestClient, fake: FakeDriver
) -> None:
    hook = {"url": "https://hooks.example.net/rackhand", "secret": "s" * 32,
            "events": ["device.health_changed"], "sites": ["bj-dc1"]}  # fmt: skip
    ok(api.post("webhooks", json=hook), 201)
    poller = api.app.state.health_poller  # type: ignore[attr-defined]
    assert api.portal.call(poller.poll_once) == 4  # type: ignore[union-attr]
    assert audit(api, "health.changed") == []
    fake.machine(bmc(2)).sensors = sensors(rpm=0)
    fake.machine(bmc(4)).sensors = sensors(rpm=0)
    api.portal.call(poller.poll_once)  # type: ignore[union-attr]
    changed = audit(api, "health.changed")
    assert {e["target_name"] for e in changed} == {"web02", "br01"}
    assert {e["actor_kind"] for e in changed} == {"system"}
    [hook_row] = ok(api.get("webhooks"))
    deliveries = ok(api.get(f"webhooks/{hook_row['id']}/deliveries"))["items"]
    assert [d["event"] for d in deliveries] == ["device.health_changed"]  # not br01's site
    assert deliveries[0]["subject"] == str(ok(api.get("devices/web02"))["id"])


def test_a_bulk_power_action_can_pick_the_critical_devices(
    api: TestClient, fake: FakeDriver
) -> None:
    fake.machine(bmc(2)).sensors = sensors(rpm=0)
    ok(api.get("health", params={"site": "bj-dc1"}))
    body = {"site": "bj-dc1", "health": "critical", "action": "cycle", "dry_run": True}
    assert ok(api.post("power", json=body))["devices"] == ["web02"]
