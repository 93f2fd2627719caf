"""A hypervisor's guest sync from its page, in a browser against a live Rackhand: the dry run's
plan, then Apply, then the guests listed; a host that does not answer is said as an error.

The built-in agent drives the fake driver here (the hypervisor is a list of domains this test
writes); the drivers against a real libvirt and the xl simulator are tested in tests/agents.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from agents.drivers.base import Unreachable
from agents.drivers.fake import FakeDriver, FakeMachine
from agents.protocol import Guest, PowerState
from tests.factories import device, path
from tests.web.live import Dashboard, live_dashboard

pytestmark = pytest.mark.xdist_group("browser")

UUID_A = "0b6f1e1c-5a4e-4a8e-9d6b-1f2a3b4c5d01"
UUID_B = "0b6f1e1c-5a4e-4a8e-9d6b-1f2a3b4c5d02"


@pytest.fixture(scope="module")
def fake() -> FakeDriver:
    return FakeDriver()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, fake: FakeDriver) -> Iterator[Dashboard]:
    """The live dashboard with hypervisors kvm01 (two domains) and kvm02 (does not answer) at
    bj-dc1, reached through the fake driver."""
    folder = Path(tmp_path_factory.mktemp("guests"))
    with live_dashboard(folder, drivers={"libvirt": fake}) as running:
        for n in (1, 2):
            device(running.api, f"kvm0{n}", kind="hypervisor")
            path(running.api, f"kvm0{n}", kind="ssh", address=f"10.0.1.{n}", username="root",
                 secret="pw", options={"hypervisor": "libvirt"})  # fmt: skip
        fake.hosts["10.0.1.1:22"] = [
            Guest(UUID_A, "vps-1", "running", PowerState.ON, 2, 2048, True),
            Guest(UUID_B, "vps-2", "shut off", PowerState.OFF, 1, 512, False),
        ]
        fake.machines["10.0.1.2:22"] = FakeMachine(fail=Unreachable("connection refused"))
        yield running


@pytest.fixture
def olga(dashboard: Dashboard, browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    dashboard.log_in(context, "olga")
    yield context.new_page()
    context.close()


def test_an_operator_syncs_a_hypervisors_guests_dry_run_first(
    dashboard: Dashboard, olga: Page
) -> None:
    olga.goto(f"{dashboard.url}/devices/kvm01")
    section = olga.get_by_role("region", name="Guests")
    expect(section.get_by_role("heading")).to_have_text("Guests (0)")
    expect(section).to_contain_text("No guests synced yet")
    section.get_by_role("button", name="Sync guests").click()

    result = olga.locator("#sync-result")
    expect(result).to_contain_text("Dry run of kvm01: 2 domains listed: 2 would be created")
    plan = result.locator("table tbody tr")
    expect(plan).to_have_count(2)
    expect(plan.filter(has_text="vps-1")).to_contain_text("create")
    expect(plan.filter(has_text="vps-1")).to_contain_text("memory_mib: 2048")
    expect(plan.filter(has_text="vps-2")).to_contain_text("state: shut off")
    expect(section.locator("tbody tr[data-guest]")).to_have_count(0)  # nothing changed yet
    assert dashboard.api.get("devices/vps-1").status_code == 404

    result.get_by_role("button", name="Apply").click()
    expect(olga.locator("#sync-result")).to_contain_text(
        "Synced kvm01: 2 domains listed: 2 created"
    )
    expect(section.get_by_role("heading")).to_have_text("Guests (2)")
    rows = section.locator("tbody tr[data-guest]")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("vps-1")
    expect(rows.nth(0)).to_contain_text("2 GiB")
    expect(rows.nth(0).locator(".state")).to_have_text("on")
    expect(rows.nth(1)).to_contain_text("shut off")
    expect(section.get_by_role("button", name="Sync guests")).to_be_enabled()

    # A second dry run finds nothing to change; the vm's page names its host.
    section.get_by_role("button", name="Sync guests").click()
    expect(olga.locator("#sync-result")).to_contain_text("0 would be created, 0 updated")
    olga.locator("#sync-result").get_by_role("button", name="Cancel").click()
    expect(olga.locator("#sync-result")).to_be_empty()
    rows.nth(0).get_by_role("link", name="vps-1").click()
    guest = olga.get_by_role("region", name="Guest")
    expect(guest.get_by_role("link", name="kvm01")).to_be_visible()
    expect(guest).to_contain_text(UUID_A)
    expect(olga.get_by_role("button", name="Open console")).to_be_visible()


def test_a_host_that_does_not_answer_is_said_as_an_error(dashboard: Dashboard, olga: Page) -> None:
    olga.goto(f"{dashboard.url}/devices/kvm02")
    olga.get_by_role("button", name="Sync guests").click()
    error = olga.locator("#sync-result p.alert.error")
    expect(error).to_contain_text("Sync of kvm02 failed: the guests of kvm02 could not be listed")
    expect(error).to_contain_text("connection refused")
    expect(olga.get_by_role("button", name="Sync guests")).to_be_enabled()
