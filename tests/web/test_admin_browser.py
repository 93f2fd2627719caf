"""The admin pages in a browser: an admin makes a user who can then log in, olga makes a token
that is shown once and revoked, an admin's webhook to a loopback receiver lists its
deliveries and sends one again, and an agent enrolled for a branch shows its command once and
is revoked after the question."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ADMIN_PASSWORD
from tests.live import until
from tests.web.live import PEOPLE_PASSWORD, Dashboard, live_dashboard
from tests.webhooks.conftest import LOOPBACK, Receiver, close, listen

pytestmark = pytest.mark.xdist_group("browser")
NEW_PASSWORD = "a long enough password for nina"


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    folder = Path(tmp_path_factory.mktemp("admin"))
    # Loopback receivers allowed, as RACKHAND_WEBHOOK_ALLOW_NETWORKS='["127.0.0.0/8"]' would.
    with live_dashboard(
        folder, webhook_allow_networks=LOOPBACK, webhook_poll_seconds=0.1
    ) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found, server = listen()
    yield found
    close(found, server)


def _admin_page(dashboard: Dashboard, browser: Browser) -> Page:
    context = browser.new_context()
    dashboard.log_in(context, "admin", ADMIN_PASSWORD)
    return context.new_page()


def test_admin_makes_a_user_who_can_log_in_then_disables_her(
    dashboard: Dashboard, browser: Browser
) -> None:
    page = _admin_page(dashboard, browser)
    try:
        page.goto(f"{dashboard.url}/admin")
        page.get_by_role("link", name="Users").click()
        form = page.locator("form[data-create-user]")
        form.get_by_label("User name").fill("nina")
        form.get_by_label("Display name").fill("Nina Operator")
        form.locator("fieldset[data-role=operator]").get_by_label("sh-br12").check()
        form.get_by_label("Password").fill(NEW_PASSWORD)
        form.get_by_role("button", name="Create user").click()
        expect(page.get_by_role("status")).to_contain_text("User nina created.")
        row = page.locator('tr[data-user-row="nina"]')
        expect(row).to_contain_text("operator at sh-br12")
        nina = browser.new_context()
        dashboard.log_in(nina, "nina", NEW_PASSWORD)
        mine = nina.new_page()
        mine.goto(f"{dashboard.url}/")
        expect(mine.get_by_role("link", name="Shanghai branch 12")).to_be_visible()
        expect(mine.get_by_text("Beijing DC1")).to_have_count(0)
        nina.close()
        # Grants change through the dialog; the API's refusal is shown in it.
        row.get_by_role("button", name="Change the grants of nina").click()
        dialog = page.locator("#grants-dialog")
        expect(dialog).to_be_visible()
        dialog.locator("fieldset[data-role=viewer]").get_by_label("bj-dc1").check()
        dialog.get_by_role("button", name="Save grants").click()
        expect(row).to_contain_text("viewer at bj-dc1")
        row.get_by_role("button", name="Disable nina").click()
        expect(row).to_contain_text("disabled")
        refused = httpx.post(
            f"{dashboard.url}/api/v1/auth/login",
            json={"username": "nina", "password": NEW_PASSWORD},
        )
        assert refused.status_code in (401, 403), refused.text
    finally:
        page.context.close()


def test_olga_makes_a_token_sees_it_once_and_revokes_it(
    dashboard: Dashboard, browser: Browser
) -> None:
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        dashboard.log_in(context, "olga", PEOPLE_PASSWORD)
        page = context.new_page()
        page.goto(f"{dashboard.url}/admin")
        expect(page.get_by_role("link", name="Users")).to_have_count(0)
        page.get_by_role("link", name="API tokens").click()
        form = page.locator("form[data-create-token]")
        form.get_by_label("Name").fill("olga-script")
        form.get_by_label("Role").select_option("operator")
        form.get_by_label("bj-dc1").check()
        form.get_by_label("Expires in (days)").fill("30")
        form.get_by_role("button", name="Create token").click()
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        value = dialog.get_by_label("Token")
        expect(value).to_have_value(re.compile(r"^rh_"))
        token = value.input_value()
        dialog.get_by_role("button", name="Copy").click()
        expect(page.get_by_role("status")).to_contain_text("copied")
        assert page.evaluate("navigator.clipboard.readText()") == token
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{dashboard.url}/api/v1/devices/node1", headers=headers).is_success
        dialog.get_by_role("button", name="Done").click()
        row = page.locator('tr[data-token-row="olga-script"]')
        expect(row).to_contain_text("operator at bj-dc1")
        expect(row).to_contain_text("active")
        assert token not in page.content()  # shown once: not on the page any more
        row.get_by_role("button", name="Revoke the token olga-script").click()
        _confirm(page, "Revoke")
        expect(row).to_contain_text("revoked")
        refused = httpx.get(f"{dashboard.url}/api/v1/devices/node1", headers=headers)
        assert refused.status_code == 401
    finally:
        context.close()


def test_admin_makes_a_webhook_and_sees_its_deliveries(
    dashboard: Dashboard, browser: Browser, receiver: Receiver
) -> None:
    page = _admin_page(dashboard, browser)
    try:
        page.goto(f"{dashboard.url}/admin/webhooks")
        form = page.locator("form[data-webhook-form]")
        form.get_by_label("Receiver URL").fill("https://10.0.0.5/hooks")
        form.get_by_label("Secret").fill("whsec-0123456789abcdef")
        form.get_by_label("bj-dc1").check()
        form.get_by_role("button", name="Create webhook").click()
        expect(page.get_by_role("status")).to_contain_text("private address")  # the API's words
        form.get_by_label("Receiver URL").fill(receiver.url + "?token=abc")
        form.get_by_role("button", name="Create webhook").click()
        expect(page.get_by_role("heading", name="Webhook 1")).to_be_visible()
        expect(page.locator("code.webhook-url")).to_have_text(receiver.url + "?token=***")
        expect(page.get_by_text("No deliveries yet")).to_be_visible()

        power = dashboard.api.post("devices/node1/power", json={"action": "status"})
        assert power.is_success, power.text
        receiver.wait_for(1)
        _delivered(dashboard, 1)
        page.reload()
        rows = page.locator("table.deliveries tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("job.finished")
        expect(rows.first).to_contain_text("delivered")
        rows.first.get_by_role("button", name="Redeliver").click()
        expect(page.get_by_role("status")).to_contain_text("Sent again")
        expect(rows).to_have_count(2)
        assert receiver.wait_for(2)[1].headers["X-Rackhand-Event"] == "job.finished"

        settings = page.locator("form[data-webhook-form]")
        settings.get_by_label("Active").uncheck()
        settings.get_by_role("button", name="Save").click()
        expect(page.get_by_text("inactive", exact=True)).to_be_visible()
        page.goto(f"{dashboard.url}/admin/webhooks")
        expect(page.locator('tr[data-webhook-row="1"]')).to_contain_text("inactive")
        page.get_by_role("button", name="Delete webhook 1").click()
        _confirm(page, "Delete")
        expect(page.get_by_text("No webhooks yet.")).to_be_visible()
    finally:
        page.context.close()


def test_admin_enrols_an_agent_sees_its_command_once_and_revokes_it(
    dashboard: Dashboard, browser: Browser
) -> None:
    page = _admin_page(dashboard, browser)
    try:
        page.goto(f"{dashboard.url}/admin")
        page.get_by_role("link", name="Site agents").click()
        expect(
            page.get_by_text("No agents: your sites are reached from the central.")
        ).to_be_visible()
        form = page.locator("form[data-enrol-agent]")
        form.get_by_label("Site").select_option("sh-br12")
        form.get_by_label("Name").fill("br12-a")
        form.get_by_label("Join token valid for (hours)").fill("2")
        form.get_by_role("button", name="Enrol agent").click()
        dialog = page.locator("#agent-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_role("heading")).to_have_text("Agent sh-br12/br12-a enrolled")
        token = dialog.get_by_label("Join token").input_value()
        assert token.startswith("rhj_")
        command = dialog.get_by_label("Command").input_value()
        assert command.startswith(f"rackhand agent --central {dashboard.url} ")
        assert f"--join-token {token}" in command
        dialog.get_by_role("button", name="Done").click()
        expect(page.get_by_role("status")).to_contain_text("its join token is not shown again")
        row = page.locator('tr[data-agent-row="sh-br12/br12-a"]')
        expect(row).to_contain_text("pending, never connected")
        assert token not in page.content()  # shown once: not on the page any more
        page.goto(f"{dashboard.url}/")
        card = page.locator('[data-site-agents="sh-br12"]')
        expect(card).to_contain_text("none online")
        expect(card).to_contain_text("br12-a pending, never connected")
        assert token not in page.content()

        card.get_by_role("link", name="Agents of sh-br12").click()
        expect(page).to_have_url(f"{dashboard.url}/admin/agents?site=sh-br12")
        row.get_by_role("button", name="Revoke the agent br12-a of sh-br12").click()
        dialog = page.locator("dialog#confirm")
        expect(dialog).to_be_visible()
        dialog.get_by_role("button", name="Cancel").click()  # asked first: nothing done
        expect(row).to_contain_text("pending")
        row.get_by_role("button", name="Revoke the agent br12-a of sh-br12").click()
        _confirm(page, "Revoke")
        expect(page.get_by_role("status")).to_contain_text("Agent sh-br12/br12-a revoked.")
        expect(row).to_contain_text("revoked at")
        expect(row.get_by_role("button")).to_have_count(0)
        joined = httpx.post(f"{dashboard.url}/api/v1/agents/join", json={"join_token": token})
        assert joined.status_code == 401, joined.text
    finally:
        page.context.close()


def _confirm(page: Page, button: str) -> None:
    """Answer the dashboard's shared confirmation dialog (Rackhand.confirm)."""
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe answer
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).to_be_hidden()


def _delivered(dashboard: Dashboard, count: int, within: float = 10.0) -> None:
    """The sender marks a delivery delivered just after the receiver answered."""

    def done() -> bool:
        items: list[dict[str, str]] = dashboard.api.get("webhooks/1/deliveries").json()["items"]
        return sum(item["status"] == "delivered" for item in items) >= count

    until(done, f"{count} deliveries delivered", within)
