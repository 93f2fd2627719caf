"""A device's hardware health from its page, in a browser against a live Rackhand: read the
sensors and see the critical one and the verdict it made, read the event log and clear it
(with a ticket, audited), and copy the FRU data into the catalogue, dry run first.

The built-in agent drives the fake driver's BMC here (sensors, log and FRUs this test writes);
the simulated BMCs learn sensors, a SEL and FRUs in their own branch, and then this test reads
them instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from agents.drivers.fake import FakeDriver, FakeMachine
from agents.protocol import Fru, FruArea, Health, LogEvent, Sensor, SensorState, Thresholds
from tests.conftest import ADMIN_PASSWORD
from tests.factories import ok
from tests.web.live import Dashboard, live_dashboard

pytestmark = pytest.mark.xdist_group("browser")

SENSORS = [
    Sensor("CPU Temp", "Temperature", SensorState.OK, 45.0, "°C",
           thresholds=Thresholds(upper_non_critical=80, upper_critical=90)),
    Sensor("Fan2", "Fan", SensorState.CRITICAL, 0.0, "RPM",
           thresholds=Thresholds(lower_critical=500, lower_non_critical=1000)),
]  # fmt: skip
EVENTS = [
    LogEvent("0002", "2026-12-06T10:05:00+00:00", Health.CRITICAL, "Lower Critical going low",
             "Fan2", "Fan"),
    LogEvent("0001", "2026-12-06T09:00:00+00:00", Health.OK, "Log area reset/cleared", "SEL"),
]  # fmt: skip
FRUS = [
    Fru(0, "Builtin FRU", product=FruArea(manufacturer="Acme", name="R640", serial_number="P-456"))
]


@pytest.fixture(scope="module")
def bmc() -> FakeMachine:
    return FakeMachine(sensors=list(SENSORS), events=list(EVENTS), frus=list(FRUS))


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, bmc: FakeMachine) -> Iterator[Dashboard]:
    """The live dashboard whose node1 BMC is the fake one (its other BMCs answer nothing)."""
    fake = FakeDriver()
    folder = Path(tmp_path_factory.mktemp("health"))
    with live_dashboard(folder, drivers={"ipmi": fake}) as running:
        port = running.fleet.control.wiring()["machines"][0]["bmc_port"]
        fake.machines[f"127.0.0.1:{port}"] = bmc
        yield running


def _page(dashboard: Dashboard, browser: Browser, username: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    if username == "admin":
        dashboard.log_in(context, username, ADMIN_PASSWORD)
    else:
        dashboard.log_in(context, username)
    yield context.new_page()
    context.close()


@pytest.fixture
def olga(dashboard: Dashboard, browser: Browser) -> Iterator[Page]:
    yield from _page(dashboard, browser, "olga")


@pytest.fixture
def admin(dashboard: Dashboard, browser: Browser) -> Iterator[Page]:
    yield from _page(dashboard, browser, "admin")


def test_an_operator_reads_the_sensors_and_clears_the_event_log(
    dashboard: Dashboard, olga: Page
) -> None:
    olga.goto(f"{dashboard.url}/devices/node1")
    section = olga.get_by_role("region", name="Health")
    verdict = section.locator("#health-verdict [data-verdict]")
    expect(verdict).to_have_text("unknown")

    section.get_by_role("button", name="Read sensors").click()
    fan = section.locator('#sensors tr[data-sensor="Fan2"]')
    expect(fan.locator(".verdict")).to_have_text("critical")
    expect(fan).to_contain_text("0 RPM")
    expect(fan).to_contain_text("LC 500")
    expect(section.locator('#sensors tr[data-sensor="CPU Temp"] .verdict')).to_have_text("ok")
    expect(verdict).to_have_text("critical")  # the verdict the read stored, swapped in
    expect(section.locator("#health-verdict .reasons")).to_contain_text(
        "Fan2 critical: 0 RPM (lower critical 500 RPM)"
    )

    section.get_by_role("button", name="Read event log").click()
    rows = section.locator("#event-log tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator(".verdict")).to_have_text("critical")
    expect(rows.nth(0)).to_contain_text("Lower Critical going low")

    section.get_by_role("button", name="Clear log").click()
    dialog = olga.locator("#confirm")
    expect(dialog).to_contain_text("Clear the event log of node1?")
    dialog.get_by_label("Ticket").fill("INC-7")
    dialog.get_by_role("button", name="Clear log").click()
    expect(section.locator("#clear-result")).to_contain_text(
        "Cleared the event log of node1: 2 entries removed."
    )
    expect(section.locator("#event-log")).to_contain_text("The event log is empty.")
    expect(section.get_by_role("button", name="Clear log")).to_be_disabled()

    audit = ok(
        dashboard.api.get("audit", params={"device": "node1", "type": "health.events_cleared"})
    )
    (cleared,) = audit["items"]
    assert cleared["ticket"] == "INC-7"
    assert cleared["details"]["entries"] == 2


def test_an_admin_copies_the_fru_data_into_the_catalogue_dry_run_first(
    dashboard: Dashboard, admin: Page
) -> None:
    admin.goto(f"{dashboard.url}/devices/node1")
    section = admin.get_by_role("region", name="Health")
    section.get_by_role("button", name="Read inventory").click()
    expect(section.locator('table[data-fru="0"]')).to_contain_text("R640")
    section.get_by_role("button", name="Copy to catalogue").click()
    result = section.locator("#copy-result")
    expect(result).to_contain_text("Dry run: copying node1's FRU data would change 3 fields.")
    expect(result.locator('li[data-change="model"]')).to_have_text("model: (empty) → R640")
    assert ok(dashboard.api.get("devices/node1"))["model"] == ""  # nothing changed yet

    result.get_by_role("button", name="Apply").click()
    expect(admin.locator("#notice")).to_contain_text(
        "Copied node1's FRU data into the catalogue: vendor, model, serial."
    )
    expect(section.locator("[data-catalogue-agrees]")).to_be_visible()
    found = ok(dashboard.api.get("devices/node1"))
    assert (found["vendor"], found["model"], found["serial"]) == ("Acme", "R640", "P-456")
