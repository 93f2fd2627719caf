"""Web fixtures: an app without its lifespan (pages and static files need no database), the
people's password hashed once, and one Chromium for the browser tests that run in a row."""

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
from tests.conftest import SERVICE_KEY, HashedOnce
from tests.web.live import PEOPLE_PASSWORD

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = "/usr/bin/chromium"  # Debian's (`make peers`): Playwright downloads no browser


@pytest.fixture(scope="module", autouse=True)
def people_hashed_once(hashed_once: HashedOnce) -> Iterator[None]:
    """The people the pages are shown to share one password: hashed once, as the admin's (no
    page test is about argon2; the identity tests keep it in full)."""
    hashed_once.remember(PEOPLE_PASSWORD)
    yield
    hashed_once.forget(PEOPLE_PASSWORD)


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


class SharedChromium:
    """Headless Chromium, started by the first browser test and kept while browser tests follow
    one another (the "browser" xdist group runs them all on one worker), so that a run starts
    it once rather than once a module.

    Closed as soon as the next test is no browser test: Playwright's sync API keeps an event
    loop running in this thread while it is open, and `asyncio.run` (the database fixtures,
    migrations) fails meanwhile. Hence a browser test's own fixtures migrate off this thread
    (`tests.live.in_a_thread`), and a browser test asks for `browser` after them: it is closed
    as `browser` is torn down, after the test's own pages and contexts and before the module's
    and session's fixtures."""

    def __init__(self) -> None:
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self.last = False  # the test running is the last of a row of browser tests

    def get(self) -> Browser:
        if self._browser is None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True
            )
        return self._browser

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None


SHARED_CHROMIUM = pytest.StashKey[SharedChromium]()


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    """The shared Chromium; each test makes its own contexts in it (and closes them)."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Chromium is not installed (`make peers` installs it)")
    chromium = request.config.stash.setdefault(SHARED_CHROMIUM, SharedChromium())
    yield chromium.get()
    if chromium.last:
        chromium.last = False
        chromium.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Mark the last of a row of browser tests, before its fixtures are torn down: `browser`
    then closes Chromium (the last test's teardown ends the session's fixtures too)."""
    if nextitem is None or "browser" not in getattr(nextitem, "fixturenames", ()):
        chromium = item.config.stash.get(SHARED_CHROMIUM, None)
        if chromium is not None:
            chromium.last = True
