"""`make screenshots`: the dashboard's main pages as PNGs in docs/screenshots/, dark theme, at a
1280-px laptop's size, over the same simulated rack as the browser tests.

Run by hand when the pages change (the PNGs are committed, so a reader of the docs sees them).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import ADMIN_PASSWORD
from tests.live import until
from tests.web.conftest import CHROMIUM
from tests.web.live import Dashboard, live_dashboard

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SCREEN = "text => window.rackhandConsole?.screenText().includes(text)"


def _shoot(page: Page, name: str) -> None:
    page.screenshot(path=OUT / f"{name}.png", full_page=False)
    print(f"docs/screenshots/{name}.png")


def _console_in_bios(dashboard: Dashboard, page: Page) -> str:
    """Open node1's console, power-cycle it from the page and press F2 during POST."""
    opened = dashboard.api.post("devices/node1/consoles", json={"ticket": "INC-4711"})
    opened.raise_for_status()
    console_id = str(opened.json()["id"])
    page.goto(f"{dashboard.url}/consoles/{console_id}")
    expect(page.locator("#lock")).to_have_text("You have the keyboard")
    page.get_by_role("button", name="Power cycle node1").click()
    page.locator("dialog#confirm").get_by_role("button", name="Power cycle").click()
    page.wait_for_function(SCREEN, arg="Press <F2>", timeout=30_000)
    page.locator("#terminal").click()
    page.keyboard.press("F2")
    page.wait_for_function(SCREEN, arg="BIOS SETUP UTILITY", timeout=30_000)
    return console_id


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder, live_dashboard(Path(folder)) as dashboard:
        job = dashboard.api.post(
            "power", json={"select": "node[1-4]", "action": "status", "ticket": "INC-4711"}
        )
        job.raise_for_status()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            context = browser.new_context(
                viewport={"width": 1280, "height": 800}, color_scheme="dark"
            )
            dashboard.log_in(context, "admin", ADMIN_PASSWORD)
            page = context.new_page()
            for name, url in (
                ("overview", "/"),
                ("devices", "/devices?select=node[1-4]"),
                ("device", "/devices/node1"),
                ("site", "/sites/bj-dc1"),
                ("job", f"/jobs/{job.json()['id']}"),
            ):
                page.goto(f"{dashboard.url}{url}")
                page.wait_for_load_state("networkidle")
                _shoot(page, name)
            console_id = _console_in_bios(dashboard, page)
            _shoot(page, "console")
            page.get_by_role("button", name="Close session").click()
            page.locator("dialog#confirm").get_by_role("button", name="Close session").click()
            until(
                lambda: dashboard.api.get(f"consoles/{console_id}").json()["closed_at"] is not None,
                "the console to close",
            )
            page.goto(f"{dashboard.url}/recordings/{console_id}")
            page.wait_for_function("() => window.rackhandReplay")
            page.evaluate("() => window.rackhandReplay.player.seek('95%')")  # BIOS setup
            page.wait_for_timeout(1000)  # the player draws the frame it sought
            _shoot(page, "recording")
            for name, url in (("audit", "/audit"), ("admin-users", "/admin/users")):
                page.goto(f"{dashboard.url}{url}")
                page.wait_for_load_state("networkidle")
                _shoot(page, name)
            browser.close()


if __name__ == "__main__":
    main()
