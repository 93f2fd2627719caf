"""The overview in a browser: every visible site with its counts, each count a link to the
list it counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.factories import ok
from tests.web.live import Dashboard, live_dashboard

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    with live_dashboard(Path(tmp_path_factory.mktemp("overview")), post_seconds=0.5) as running:
        api = running.api
        ok(api.post("devices/node2/power", json={"action": "off"}))
        ok(api.post("devices/node3/power", json={"action": "on"}))
        console = ok(api.post("devices/node1/consoles", json={"via": "console_port"}), 201)
        try:
            yield running
        finally:
            api.delete(f"consoles/{console['id']}")


def count(page: Page, label: str) -> str:
    return page.get_by_role("link", name=label, exact=True).inner_text()


def test_admin_sees_both_sites_with_their_counts(dashboard: Dashboard, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        dashboard.log_in(context, "admin", "admin-password-for-tests")
        page = context.new_page()
        page.goto(f"{dashboard.url}/")
        expect(page.get_by_role("heading", name="Beijing DC1")).to_be_visible()
        expect(page.get_by_role("heading", name="Shanghai branch 12")).to_be_visible()
        expected = {
            "6 devices at bj-dc1": "6",
            "4 server at bj-dc1": "4",
            "1 pdu at bj-dc1": "1",
            "1 console server at bj-dc1": "1",
            "1 on at bj-dc1": "1",
            "1 off at bj-dc1": "1",
            "4 unknown at bj-dc1": "4",
            "0 unreachable BMCs at bj-dc1": "0",
            "0 critical health at bj-dc1": "0",
            "6 unknown health at bj-dc1": "6",
            "0 running jobs at bj-dc1": "0",
            "1 open consoles at bj-dc1": "1",
            "2 devices at sh-br12": "2",
            "2 server at sh-br12": "2",
            "2 unknown at sh-br12": "2",
            "0 open consoles at sh-br12": "0",
        }
        for label, number in expected.items():
            assert count(page, label) == number, label
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")

        for label, url in (
            ("1 off at bj-dc1", "/devices?site=bj-dc1&power=off"),
            ("4 server at bj-dc1", "/devices?site=bj-dc1&kind=server"),
            ("0 unreachable BMCs at bj-dc1", "/devices?site=bj-dc1&power=unreachable"),
            ("0 critical health at bj-dc1", "/devices?site=bj-dc1&health=critical"),
            ("0 running jobs at bj-dc1", "/jobs?site=bj-dc1&status=running"),
            ("1 open consoles at bj-dc1", "/consoles?site=bj-dc1"),
        ):
            page.get_by_role("link", name=label, exact=True).click()
            expect(page).to_have_url(f"{dashboard.url}{url}")
            if "power=off" in url:  # the list it lands on lists what was counted
                expect(page.get_by_role("link", name="node2", exact=True)).to_be_visible()
                expect(page.get_by_role("link", name="node3", exact=True)).to_have_count(0)
            page.go_back()
    finally:
        context.close()


def test_a_site_scoped_operator_sees_only_their_site(
    dashboard: Dashboard, browser: Browser
) -> None:
    context = browser.new_context()
    try:
        dashboard.log_in(context, "sam")
        page = context.new_page()
        page.goto(f"{dashboard.url}/")
        expect(page.get_by_role("heading", name="Shanghai branch 12")).to_be_visible()
        expect(page.get_by_text("Beijing DC1")).to_have_count(0)
        assert count(page, "2 devices at sh-br12") == "2"
    finally:
        context.close()
