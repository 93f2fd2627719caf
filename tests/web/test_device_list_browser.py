"""The device list against a live Rackhand and a simulated rack: search by node range, a bulk
power cycle previewed by the API's dry run and confirmed from the keyboard, the job followed
live to its end; a viewer gets no actions, another site's operator sees none of it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from app.web import jobs as job_pages
from tests.factories import ok
from tests.web.live import Dashboard, live_dashboard

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    with live_dashboard(Path(tmp_path_factory.mktemp("devices")), post_seconds=1.0) as running:
        yield running


def test_search_preview_and_cycle_three_nodes_live(
    dashboard: Dashboard, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_pages, "SHOWN", 2)  # the job's page lists 2 of its 3 tasks
    context = browser.new_context()
    try:
        dashboard.log_in(context, "olga")
        page = context.new_page()
        page.goto(f"{dashboard.url}/devices")
        page.get_by_label("Node range").fill("node[1-3]")
        rows = page.locator("table.devices tbody tr")
        expect(rows).to_have_count(3)
        expect(page).to_have_url(re.compile(r"/devices\?select=node%5B1-3%5D"))  # linkable
        expect(page.get_by_role("link", name="node4")).to_have_count(0)
        expect(page.locator("#results-status")).to_have_text("3 devices match.")  # said aloud

        # The preview is the API's dry run: it shows what would happen and creates no job.
        page.get_by_label("all 3 devices matching the search").check()
        page.get_by_label("Action").select_option("power:cycle")
        page.get_by_role("button", name="Preview…").focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("3 devices")
        expect(dialog).to_contain_text("bj-dc1")
        assert dashboard.api.get("jobs").json()["items"] == []
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        # Again, completed from the keyboard: the ticket field has the focus; Enter confirms.
        page.get_by_role("button", name="Preview…").focus()
        page.keyboard.press("Enter")
        expect(dialog).to_be_visible()
        expect(page.get_by_label("Ticket")).to_be_focused()
        page.keyboard.type("INC-4711")
        page.keyboard.press("Tab")
        page.keyboard.type("rack A01 maintenance")
        page.keyboard.press("Tab")  # stagger: one power-on a second, so the job runs ~2 s
        expect(page.get_by_label("Stagger")).to_be_focused()
        page.keyboard.type("1")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"), timeout=15_000)
        # Rendered while it ran: the rows below end by the job's event stream, not a reload.
        expect(page.locator("#job")).to_have_attribute("data-running", "true")
        expect(page.get_by_role("heading", name="Power cycle")).to_be_visible()
        expect(page.get_by_text("INC-4711")).to_be_visible()
        expect(page.get_by_text("rack A01 maintenance")).to_be_visible()
        tasks = page.locator("table.tasks tbody tr")
        expect(tasks).to_have_count(2)
        expect(page.locator("#tasks-shown")).to_contain_text("Showing 2 of 3 tasks")
        for n in range(2):
            status = tasks.nth(n).locator("[data-field=status]")
            expect(status).to_have_text("succeeded", timeout=30_000)
        expect(page.locator("[data-job-status]")).to_have_text("succeeded")
        # The tally counts every task's events, the one not listed too.
        expect(page.locator("[data-progress]")).to_contain_text("3 of 3")
        expect(page.locator("[data-count=succeeded] [data-number]")).to_have_text("3")
        expect(page.locator("[data-count=queued]")).to_be_hidden()
        expect(page.locator("[data-count=running]")).to_be_hidden()
        jobs = dashboard.api.get("jobs").json()["items"]
        assert [(job["action"], job["ticket"], job["total"]) for job in jobs] == [
            ("cycle", "INC-4711", 3)
        ]
        job_id = jobs[0]["id"]

        # The list of jobs shows it; a finished job's page renders without a stream.
        page.goto(f"{dashboard.url}/jobs?ticket=INC-4711")
        page.get_by_role("link", name=job_id[:12]).click()
        expect(page.locator("[data-job-status]")).to_have_text("succeeded")
        expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)

        # A bad node range says the API's words on the page, not a 500.
        answer = page.goto(f"{dashboard.url}/devices?select=node%5B1-")
        assert answer is not None
        assert answer.status == 422
        expect(page.get_by_role("alert")).to_contain_text("select")
    finally:
        context.close()
    _others_see_no_actions(dashboard, browser, job_id)


def _others_see_no_actions(dashboard: Dashboard, browser: Browser, job_id: str) -> None:
    context = browser.new_context()
    try:
        dashboard.log_in(context, "vera")
        page = context.new_page()
        page.goto(f"{dashboard.url}/devices?site=bj-dc1")
        expect(page.get_by_role("link", name="node1")).to_be_visible()
        expect(page.get_by_role("checkbox")).to_have_count(0)
        expect(page.get_by_role("button", name="Preview…")).to_have_count(0)
        page.goto(f"{dashboard.url}/jobs/{job_id}")
        expect(page.locator("[data-job-status]")).to_have_text("succeeded")  # her site's job
        expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    finally:
        context.close()
    context = browser.new_context()
    try:
        dashboard.log_in(context, "sam")
        page = context.new_page()
        page.goto(f"{dashboard.url}/devices")
        expect(page.get_by_role("link", name="br-web01")).to_be_visible()
        expect(page.get_by_role("link", name="node1")).to_have_count(0)
        answer = page.goto(f"{dashboard.url}/jobs/{job_id}")
        assert answer is not None
        assert answer.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        answer = page.goto(f"{dashboard.url}/devices?site=bj-dc1")
        assert answer is not None
        assert answer.status == 404
        expect(page.get_by_role("alert")).to_contain_text("no site 'bj-dc1'")
    finally:
        context.close()


def test_a_site_s_ticket_rule_is_said_and_a_running_job_is_cancelled(
    dashboard: Dashboard, browser: Browser
) -> None:
    ok(dashboard.api.patch("sites/bj-dc1", json={"require_ticket": True}))
    context = browser.new_context()
    try:
        dashboard.log_in(context, "olga")
        page = context.new_page()
        page.goto(f"{dashboard.url}/devices?tag=web")
        expect(page.locator("table.devices tbody tr")).to_have_count(4)
        page.get_by_label("all 4 devices matching the search").check()
        page.get_by_label("Action").select_option("power:cycle")
        page.get_by_role("button", name="Preview…").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("4 devices")
        dialog.get_by_role("button", name="Confirm").click()
        expect(dialog.get_by_role("alert")).to_contain_text("requires a ticket")
        expect(page.get_by_label("Ticket")).to_be_focused()
        page.get_by_label("Ticket").fill("INC-99")
        page.get_by_label("Stagger").fill("1")  # one power-on a second: ~3 s to run
        dialog.get_by_role("button", name="Confirm").click()
        expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"), timeout=15_000)
        page.get_by_role("button", name="Cancel job").click()
        expect(page.locator("[data-job-status]")).to_have_text(
            re.compile("cancelled|partial"), timeout=15_000
        )
        expect(page.locator("[data-field=status]", has_text="cancelled").first).to_be_visible()
        expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()

        # Boot changes go to the ticked devices, one API call (and job) each.
        page.goto(f"{dashboard.url}/devices?select=node4")
        page.get_by_label("Select node4").check()
        page.get_by_label("Action").select_option("boot:bios")
        page.get_by_role("button", name="Preview…").click()
        expect(dialog).to_contain_text("Boot from bios: 1 device.")
        expect(dialog).to_contain_text("bj-dc1 (1)")
        page.get_by_label("Ticket").fill("INC-100")
        dialog.get_by_role("button", name="Confirm").click()
        expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"), timeout=15_000)
        expect(page.get_by_role("heading", name="Boot bios")).to_be_visible()
        expect(page.locator("[data-job-status]")).to_have_text("succeeded", timeout=15_000)
    finally:
        context.close()
        ok(dashboard.api.patch("sites/bj-dc1", json={"require_ticket": False}))
