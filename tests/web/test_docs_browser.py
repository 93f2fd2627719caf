"""In a real browser, with every request to another host refused, the docs page renders."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Route, expect

from app.config import Settings
from app.main import create_app
from app.migrate import upgrade
from tests.conftest import ADMIN_PASSWORD, SERVICE_KEY
from tests.live import in_a_thread, uvicorn_thread

pytestmark = pytest.mark.xdist_group("browser")  # one Chromium per run, on one worker


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Rackhand on a real socket, over a throwaway SQLite database."""
    tmp_path = tmp_path_factory.mktemp("docs")
    url = f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}"
    in_a_thread(upgrade, url)  # the shared Chromium may be open
    settings = Settings(
        database_url=url,
        data_dir=tmp_path,
        secret_key=SERVICE_KEY,
        admin_password=ADMIN_PASSWORD,
        start_workers=False,
        poll_power=False,
    )
    with uvicorn_thread(create_app(settings)) as base:
        yield base


def test_the_docs_page_renders_with_no_way_out(server: str, browser: Browser) -> None:
    own = urlsplit(server).netloc
    refused: list[str] = []

    def offline(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context = browser.new_context()
    try:
        context.route("**/*", offline)
        page = context.new_page()
        failed: list[str] = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto(f"{server}/api/v1/docs", wait_until="load", timeout=10_000)
        expect(page.locator(".info .title")).to_contain_text("Rackhand", timeout=10_000)
        listing = page.get_by_role("button", name="GET /api/v1/devices List Devices")
        expect(listing).to_be_visible()
        expect(page.get_by_role("button", name="Authorize")).to_be_visible()
        assert refused == []  # nothing was even attempted elsewhere
        assert failed == []
    finally:
        context.close()
