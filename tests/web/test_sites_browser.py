"""The site page in a browser: the rack elevation draws node1..node4 at their units, readable
at 1280 px without scrolling sideways, and its list reads top to bottom for screen readers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.web.live import Dashboard, live_dashboard

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    with live_dashboard(Path(tmp_path_factory.mktemp("sites"))) as running:
        yield running


@pytest.mark.parametrize("width", [1280, 800])
def test_the_elevation_draws_each_node_at_its_units(
    dashboard: Dashboard, browser: Browser, width: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        dashboard.log_in(context, "vera")
        page = context.new_page()
        page.goto(f"{dashboard.url}/sites/bj-dc1")
        expect(page.get_by_role("heading", name="Beijing DC1")).to_be_visible()
        rack = page.get_by_role("list", name="Rack A01, top (U42) to bottom (U1)")
        expect(rack).to_be_visible()
        units = page.locator("#rack-A01 .units li")
        expect(units).to_have_count(42)
        unit_box = {}
        for n in (1, 2, 3, 9, 42):
            box = units.nth(42 - n).bounding_box()
            assert box is not None
            unit_box[n] = box
        assert unit_box[42]["y"] < unit_box[9]["y"] < unit_box[1]["y"]  # U42 on top
        for n in range(1, 5):
            node = rack.get_by_role("link", name=f"node{n}")
            low, high = 2 * n, 2 * n + 1
            expect(node).to_contain_text(f"U{low}\u2013U{high}")
            expect(node).to_have_attribute("href", f"/devices/node{n}")
            box = node.bounding_box()
            assert box is not None
            # It spans its two units, level with their numbers on the left.
            top = units.nth(42 - high).bounding_box()
            bottom = units.nth(42 - low).bounding_box()
            assert top is not None
            assert bottom is not None
            assert abs(box["y"] - top["y"]) < 4
            assert abs((box["y"] + box["height"]) - (bottom["y"] + bottom["height"])) < 4
        # Read in order, top to bottom: the PDU and console server above node4 .. node1.
        names = rack.locator("li[data-device]").evaluate_all(
            "(items) => items.map(i => i.dataset.device)"
        )
        assert names == ["cs1", "pdu1", "node4", "node3", "node2", "node1"]
        expect(rack.locator("li.empty").first).to_have_text("U42 empty")
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        rack.get_by_role("link", name="node3").click()
        expect(page).to_have_url(f"{dashboard.url}/devices/node3")
        page.get_by_role("link", name="A01").click()
        expect(page).to_have_url(f"{dashboard.url}/sites/bj-dc1?rack=A01#rack-A01")
        expect(page.locator("#rack-A01")).to_be_in_viewport()
    finally:
        context.close()
