"""The device page and the site page in a browser, against a live Rackhand and a simulated
rack: paths in priority order with secrets as "set" only, a power-off from the page, role-aware
buttons, other sites' objects as 404 pages, and the rack elevation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.sim.fleet import PASSWORD
from tests.web.live import Dashboard, live_dashboard

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    with live_dashboard(Path(tmp_path_factory.mktemp("device"))) as running:
        yield running


class _Login(Protocol):
    def __call__(self, username: str, width: int = 1280) -> Page: ...


@pytest.fixture
def as_user(dashboard: Dashboard, browser: Browser) -> Iterator[_Login]:
    contexts: list[BrowserContext] = []

    def log_in(username: str, width: int = 1280) -> Page:
        context = browser.new_context(viewport={"width": width, "height": 900})
        contexts.append(context)
        dashboard.log_in(context, username)
        return context.new_page()

    yield log_in
    for context in contexts:
        context.close()


def test_paths_in_priority_order_and_secrets_only_as_set(
    dashboard: Dashboard, as_user: _Login
) -> None:
    page = as_user("vera")
    response = page.goto(f"{dashboard.url}/devices/node1")
    assert response is not None
    assert response.status == 200
    rows = page.get_by_role("region", name="Control paths").locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("ipmi")
    expect(rows.nth(0)).to_contain_text("set")
    expect(rows.nth(1)).to_contain_text("console_port")
    expect(rows.nth(1)).to_contain_text("via cs1 port 1")
    expect(rows.nth(2)).to_contain_text("pdu_outlet")
    expect(rows.nth(0)).to_contain_text("not checked yet")
    assert [rows.nth(n).get_attribute("data-path") for n in range(3)] == [
        "ipmi",
        "console_port",
        "pdu_outlet",
    ]
    # Neither the page nor its source ever carry the BMC password.
    assert PASSWORD not in page.content()
    source = page.context.request.get(f"{dashboard.url}/devices/node1")
    assert source.ok
    assert PASSWORD not in source.text()


def test_a_viewer_sees_no_buttons(dashboard: Dashboard, as_user: _Login) -> None:
    page = as_user("vera")
    page.goto(f"{dashboard.url}/devices/node1")
    expect(page.get_by_role("heading", name="node1")).to_be_visible()
    reads = page.locator("#main button[hx-get]")  # the health reads, which viewers may make
    expect(reads).to_have_count(3)
    expect(page.locator("#main button")).to_have_count(3)
    expect(page.locator("dialog")).to_have_count(0)
    assert "device.js" not in page.content()


def test_other_sites_objects_are_404_pages(dashboard: Dashboard, as_user: _Login) -> None:
    page = as_user("sam")
    for path, missing in (
        ("/devices/node1", "/devices/no-such-device"),
        ("/sites/bj-dc1", "/sites/no-such-site"),
    ):
        hidden = page.goto(f"{dashboard.url}{path}")
        assert hidden is not None
        assert hidden.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        shown = page.locator("main p.error").inner_text()
        absent = page.goto(f"{dashboard.url}{missing}")
        assert absent is not None
        assert absent.status == 404
        name, other = path.rsplit("/", 1)[1], missing.rsplit("/", 1)[1]
        assert page.locator("main p.error").inner_text() == shown.replace(name, other)
    # sam's own devices are there.
    page.goto(f"{dashboard.url}/devices/br-web01")
    expect(page.get_by_role("heading", name="br-web01")).to_be_visible()


def test_an_operator_powers_node1_off_from_its_page(dashboard: Dashboard, as_user: _Login) -> None:
    page = as_user("olga")
    page.goto(f"{dashboard.url}/devices/node1")
    state = page.locator("[data-power-state]")
    page.get_by_role("button", name="Power off").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_label("Ticket")).to_be_focused()
    page.get_by_label("Ticket").fill("CHG-42")
    page.get_by_label("Reason").fill("disk swap")
    dialog.get_by_role("button", name="Power off").click()
    expect(dialog).to_be_hidden()
    result = page.locator("#action-result")
    expect(result).to_contain_text("succeeded", timeout=30_000)
    expect(result.get_by_role("link", name="job")).to_have_attribute(
        "href", re.compile(r"^/jobs/\w+$")
    )
    expect(state).to_have_text("off")
    # The state was stored: a fresh page says so, with the time it was read and the event.
    page.reload()
    expect(state).to_have_text("off")
    expect(page.locator("[data-power-when]")).to_contain_text("via ipmi")
    events = page.get_by_role("region", name="Recent events")
    expect(events.get_by_role("row", name="power.requested")).to_contain_text("CHG-42")
    # The site's elevation draws it as off.
    page.get_by_role("link", name="A01").first.click()
    expect(page.locator('li[data-device="node1"]')).to_have_class("slot device power-off")
