"""A device's hardware health from its page, in a browser against a live Rackhand and the
simulated rack: read the sensors and see a failed fan and the verdict it made, read the event
log and clear it (with a ticket, audited), and copy the FRU data into the catalogue, dry run
first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ADMIN_PASSWORD
from tests.factories import ok
from tests.web.live import PEOPLE_PASSWORD, Dashboard, live_dashboard

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The live dashboard; node1 is on, its Fan2 stopped (0 RPM)."""
    folder = Path(tmp_path_factory.mktemp("health"))
    with live_dashboard(folder) as running:
        port = running.fleet.control.wiring()["machines"][0]["bmc_port"]
        running.fleet.control.set_power(port, "on")
        running.fleet.control.set_sensor(port, "Fan2", 0)
        yield running


def _page(dashboard: Dashboard, browser: Browser, username: str, password: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    dashboard.log_in(context, username, password)
    yield context.new_page()
    context.close()


@pytest.fixture
def olga(dashboard: Dashboard, browser: Browser) -> Iterator[Page]:
    yield from _page(dashboard, browser, "olga", PEOPLE_PASSWORD)


@pytest.fixture
def admin(dashboard: Dashboard, browser: Browser) -> Iterator[Page]:
    yield from _page(dashboard, browser, "admin", ADMIN_PASSWORD)


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
    expect(fan.locator("td.thresholds")).to_contain_text("LC")
    expect(section.locator('#sensors tr[data-sensor="Fan1"] .verdict')).to_have_text("ok")
    expect(verdict).to_have_text("critical")  # the verdict the read stored, swapped in
    expect(section.locator("#health-verdict .reasons")).to_contain_text("Fan2 critical: 0 RPM")

    section.get_by_role("button", name="Read event log").click()
    rows = section.locator("#event-log tbody tr")
    expect(rows.first).to_be_visible()
    held = rows.count()
    fan_low = section.locator("#event-log tbody tr", has_text="Fan2").first
    expect(fan_low.locator(".verdict")).to_have_text("critical")

    section.get_by_role("button", name="Clear log").click()
    dialog = olga.locator("#confirm")
    expect(dialog).to_contain_text("Clear the event log of node1?")
    dialog.get_by_label("Ticket").fill("INC-7")
    dialog.get_by_role("button", name="Clear log").click()
    expect(section.locator("#clear-result")).to_contain_text(
        f"Cleared the event log of node1: {held} entr"
    )
    expect(section.locator("#event-log tbody tr", has_text="Fan2")).to_have_count(0)
    assert section.locator("#event-log tbody tr").count() <= 1  # the BMC's own "log cleared"

    audit = ok(
        dashboard.api.get("audit", params={"device": "node1", "type": "health.events_cleared"})
    )
    (cleared,) = audit["items"]
    assert cleared["ticket"] == "INC-7"
    assert cleared["details"]["entries"] == held


def test_an_admin_copies_the_fru_data_into_the_catalogue_dry_run_first(
    dashboard: Dashboard, admin: Page
) -> None:
    admin.goto(f"{dashboard.url}/devices/node1")
    section = admin.get_by_role("region", name="Health")
    section.get_by_role("button", name="Read inventory").click()
    expect(section.locator('table[data-fru="0"]')).to_contain_text("Rackhand")
    section.get_by_role("button", name="Copy to catalogue").click()
    result = section.locator("#copy-result")
    expect(result).to_contain_text("Dry run: copying node1's FRU data would change 3 fields.")
    expect(result.locator('li[data-change="vendor"]')).to_have_text("vendor: (empty) → Rackhand")
    assert ok(dashboard.api.get("devices/node1"))["vendor"] == ""  # nothing changed yet

    result.get_by_role("button", name="Apply").click()
    expect(admin.locator("#notice")).to_contain_text(
        "Copied node1's FRU data into the catalogue: vendor, model, serial."
    )
    expect(section.locator("[data-catalogue-agrees]")).to_be_visible()
    assert ok(dashboard.api.get("devices/node1"))["vendor"] == "Rackhand"
