"""Web fixtures: an app without its lifespan (pages and static files need no database), and
one Chromium per test worker for the browser tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.web.assets import INSTALL_HINT, SWAGGER_UI
from tests.conftest import SERVICE_KEY

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"  # Debian's (`make peers`): Playwright downloads no browser


@pytest.fixture
def web(tmp_path: Path) -> TestClient:
    """A client of an app that was never started: the docs page and `/static/` need no state."""
    if SWAGGER_UI.missing():
        pytest.fail(f"the front-end files are not installed: {INSTALL_HINT}")
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        data_dir=tmp_path,
        secret_key=SERVICE_KEY,
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, per test module. Not per session: Playwright's sync API keeps an
    event loop running in this thread while it is open, and `asyncio.run` (the database
    fixtures, migrations) fails meanwhile, so a test asks for it after any such fixture."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Chromium is not installed (`make peers` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
