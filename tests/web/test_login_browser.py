"""Log in through the form, land where the link pointed, log out; the session is gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.web.live import PEOPLE_PASSWORD, Dashboard, live_dashboard

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    with live_dashboard(Path(tmp_path_factory.mktemp("login"))) as running:
        yield running


def test_log_in_follow_the_link_and_log_out(dashboard: Dashboard, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{dashboard.url}/")
        expect(page).to_have_url(f"{dashboard.url}/login?next=/")
        page.get_by_label("User name").fill("olga")
        page.get_by_label("Password").fill("wrong password")
        page.keyboard.press("Enter")
        expect(page.get_by_role("alert")).to_contain_text("password")
        page.get_by_label("Password").fill(PEOPLE_PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{dashboard.url}/")
        expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
        expect(page.get_by_role("link", name="Beijing DC1")).to_be_visible()
        expect(page.get_by_text("Shanghai branch 12")).to_have_count(0)  # not olga's site
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(f"{dashboard.url}/login")
        page.goto(f"{dashboard.url}/")
        expect(page).to_have_url(f"{dashboard.url}/login?next=/")
    finally:
        context.close()


def test_the_next_link_never_leaves_the_site(dashboard: Dashboard, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{dashboard.url}/login?next=//evil.example/x")
        page.get_by_label("User name").fill("olga")
        page.get_by_label("Password").fill(PEOPLE_PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{dashboard.url}/")
    finally:
        context.close()
