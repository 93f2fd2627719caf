"""The console in the browser against the simulated rack: olga opens node1's console,
power-cycles the machine from the page, presses F2 during POST and lands in BIOS setup; the
admin joins read-only, then takes the keyboard from olga's hand, and closes the session; the
replay plays the BIOS screen back. vera (viewer) is refused the stream, sam gets a 404."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.conftest import ADMIN_PASSWORD
from tests.web.live import Dashboard, live_dashboard

pytestmark = pytest.mark.xdist_group("browser")
SCREEN = "text => window.rackhandConsole && window.rackhandConsole.screenText().includes(text)"
POST_SCREEN = "Press <F2>"
BIOS = "BIOS SETUP UTILITY"


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    folder = Path(tmp_path_factory.mktemp("console"))
    with live_dashboard(folder, stream_recheck_seconds=1.0) as running:
        yield running


def _screen_shows(page: Page, text: str, timeout: float = 20_000) -> None:
    """Wait until xterm's buffer holds `text` (what the terminal shows, not the DOM)."""
    page.wait_for_function(SCREEN, arg=text, timeout=timeout)


def _confirm(page: Page, button: str) -> None:
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=button).click()
    expect(dialog).to_be_hidden()


def test_power_cycle_into_bios_share_hand_over_close_and_replay(
    dashboard: Dashboard, browser: Browser
) -> None:
    olga_context, admin_context = browser.new_context(), browser.new_context()
    vera_context, sam_context = browser.new_context(), browser.new_context()
    try:
        olga_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dashboard.url)
        dashboard.log_in(olga_context, "olga")
        olga = olga_context.new_page()
        olga.goto(f"{dashboard.url}/consoles")
        olga.get_by_text("Open a console").click()
        form = olga.get_by_role("form", name="Open a console")
        form.get_by_label("Device").fill("node1")
        form.get_by_label("Ticket").fill("INC-77")
        form.get_by_role("button", name="Open console").click()
        expect(olga).to_have_url(re.compile(r"/consoles/[0-9a-f]{32}$"))
        console_id = olga.url.rsplit("/", 1)[1]
        expect(olga.locator(".xterm")).to_be_visible()
        expect(olga.locator("#lock")).to_have_text("You have the keyboard")

        olga.get_by_role("button", name="Power cycle node1").click()
        _confirm(olga, "Power cycle")
        _screen_shows(olga, POST_SCREEN)
        olga.locator("#terminal").click()
        olga.keyboard.press("F2")  # xterm sends ESC O Q, a VT100 F2
        _screen_shows(olga, BIOS)
        expect(olga.locator("#power-result")).to_contain_text("Power cycle by olga: succeeded")
        olga.evaluate("() => window.rackhandTerminal.selectAll()")
        olga.get_by_role("button", name="Copy").click()
        assert BIOS in olga.evaluate("() => navigator.clipboard.readText()")

        # the admin joins late, read-only: the screen comes first (the scrollback)
        dashboard.log_in(admin_context, "admin", ADMIN_PASSWORD)
        admin = admin_context.new_page()
        admin.goto(f"{dashboard.url}/consoles/{console_id}?mode=ro")
        _screen_shows(admin, BIOS)
        expect(admin.locator("#lock")).to_contain_text("In use by olga since")
        expect(admin.get_by_role("switch", name="Read-only")).to_be_checked()
        expect(olga.locator("#viewers")).to_contain_text("admin")

        dashboard.log_in(vera_context, "vera")  # a viewer: the stream refuses her, said so
        vera = vera_context.new_page()
        vera.goto(f"{dashboard.url}/consoles/{console_id}")
        expect(vera.locator("#stream-problem")).to_contain_text("You may not use this console")
        expect(vera.locator("#stream-problem")).to_contain_text("operator")
        expect(vera.get_by_role("button", name="Take the keyboard")).to_have_count(0)

        dashboard.log_in(sam_context, "sam")  # another site's session does not exist for him
        sam = sam_context.new_page()
        response = sam.goto(f"{dashboard.url}/consoles/{console_id}")
        assert response is not None
        assert response.status == 404
        expect(sam.get_by_role("heading", name="Not found")).to_be_visible()

        admin.get_by_role("switch", name="Read-only").uncheck()  # reconnects rw
        expect(admin.locator("#connection")).to_contain_text("Connected to node1")
        expect(admin.locator("#connection")).not_to_contain_text("read-only")
        _screen_shows(admin, BIOS)
        handover = olga.get_by_label("Hand the keyboard to")
        expect(handover.locator("option")).to_have_count(1)
        handover.select_option(index=0)
        olga.get_by_role("button", name="Hand over").click()
        expect(admin.locator("#lock")).to_have_text("You have the keyboard")
        expect(olga.locator("#lock")).to_contain_text("In use by admin since")

        admin.get_by_role("button", name="Send break").click()
        _confirm(admin, "Send break")
        expect(olga.locator("#notice")).to_contain_text("Break sent by admin")

        early = olga_context.new_page()  # the recording is served once the session is closed
        early.goto(f"{dashboard.url}/recordings/{console_id}")
        expect(early.get_by_role("alert")).to_contain_text("still open")
        early.close()

        admin.get_by_role("button", name="Close session").click()
        _confirm(admin, "Close session")
        for page in (admin, olga):
            expect(page.locator("#stream-problem")).to_contain_text("The session has ended")
        admin.get_by_role("link", name="Replay the recording").click()
        expect(admin).to_have_url(f"{dashboard.url}/recordings/{console_id}")
        facts = admin.locator(".recording-facts")
        expect(facts).to_contain_text("INC-77")
        expect(facts).to_contain_text("olga")
        expect(admin.locator("#sha-check")).to_have_text("(matches the downloaded file)")
        player = admin.locator("#player")
        expect(player.locator(".ap-player")).to_be_visible()
        admin.evaluate("() => window.rackhandReplay.player.seek('100%')")
        expect(player).to_contain_text(BIOS)
    finally:
        for context in (olga_context, admin_context, vera_context, sam_context):
            context.close()


def test_a_stream_that_ends_says_why_and_offers_to_reconnect(
    dashboard: Dashboard, browser: Browser
) -> None:
    context = browser.new_context()
    try:
        dashboard.log_in(context, "olga")
        opened = context.request.post(
            f"{dashboard.url}/api/v1/devices/node3/consoles",
            data={"via": "ipmi"},
            headers={"X-CSRF-Token": _csrf(context)},
        )
        assert opened.status == 201, opened.text()
        console = context.new_page()
        console.goto(f"{dashboard.url}/consoles/{opened.json()['id']}")
        expect(console.locator("#lock")).to_have_text("You have the keyboard")
        other = context.new_page()  # logging out in another tab ends the login everywhere
        other.goto(f"{dashboard.url}/consoles")
        other.get_by_role("button", name="Log out").click()
        problem = console.locator("#stream-problem")
        expect(problem).to_contain_text("You are not logged in")
        expect(problem.get_by_role("link", name="Log in again")).to_be_visible()
        problem.get_by_role("button", name="Reconnect").click()
        expect(problem).to_contain_text("You are not logged in")
        expect(console.locator("#connection")).to_have_text("Disconnected")
    finally:
        context.close()


def _csrf(context: BrowserContext) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "rackhand_csrf")
