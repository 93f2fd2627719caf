"""The site page: facts, racks, elevations drawn from the catalogue; another site is a 404
page like a missing one. And the elevation's layout itself, top to bottom."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from agents.protocol import PowerState
from app.inventory.elevation import Elevation, Mounted
from app.inventory.models import DeviceKind
from app.inventory.schemas import RackRead
from tests.factories import device, ok, rack, site

PAGE = "http://testserver"
PASSWORD = "correct horse battery staple"


def _rack(height: int) -> RackRead:
    now = datetime.now(UTC)
    return RackRead(id=1, site="s", name="R", height_u=height, description="",
                    created_at=now, updated_at=now)  # fmt: skip


def _mounted(name: str, position: int, height: int = 1) -> Mounted:
    return Mounted(name, DeviceKind.SERVER, position, height, PowerState.UNKNOWN)


def test_slots_run_top_to_bottom_with_the_gaps_between() -> None:
    elevation = Elevation(_rack(10), [_mounted("a", 2, 2), _mounted("b", 10), _mounted("c", 5)])
    drawn = [(s.top_u, s.bottom_u, s.row, s.span, s.device and s.device.name)
             for s in elevation.slots()]  # fmt: skip
    assert drawn == [
        (10, 10, 1, 1, "b"),
        (9, 6, 2, 4, None),
        (5, 5, 6, 1, "c"),
        (4, 4, 7, 1, None),
        (3, 2, 8, 2, "a"),
        (1, 1, 10, 1, None),
    ]
    assert elevation.used_u == 4
    assert [(s.top_u, s.bottom_u) for s in Elevation(_rack(42)).slots()] == [(42, 1)]


def _seeded(client: TestClient) -> None:
    site(client, "bj-dc1", name="Beijing DC1", require_ticket=True)
    site(client, "sh-br12", name="Shanghai branch 12", kind="branch")
    rack(client, "A01", "bj-dc1", height_u=42)
    rack(client, "B01", "bj-dc1", height_u=12)
    device(client, "node1", rack="A01", position_u=2, height_u=2)
    device(client, "node2", rack="A01", position_u=4, height_u=2)
    device(client, "spare", rack="A01")  # in the rack, not yet placed
    device(client, "sw1", kind="network", rack="B01", position_u=12)
    body = {"username": "sam", "password": PASSWORD,
            "grants": [{"role": "operator", "sites": ["sh-br12"]}]}  # fmt: skip
    ok(client.post("users", json=body), 201)


def _get(client: TestClient, url: str) -> tuple[int, str]:
    response = client.get(f"{PAGE}{url}")
    return response.status_code, response.text


def test_the_site_page_draws_every_rack(client: TestClient) -> None:
    _seeded(client)
    ok(
        client.post(
            "auth/login", json={"username": "admin", "password": "admin-password-for-tests"}
        )
    )
    status, html = _get(client, "/sites/bj-dc1")
    assert status == 200
    assert "required for power-off" in html  # the site's ticket rule
    assert 'id="rack-A01"' in html
    assert 'id="rack-B01"' in html
    assert 'data-device="node1" data-units="2-3"' in html
    assert 'data-device="node2" data-units="4-5"' in html
    assert 'style="grid-row: 1 / span 37"' in html  # U42..U6 of A01 empty, at the top
    assert 'style="grid-row: 38 / span 2" data-device="node2"' in html
    assert 'data-device="sw1" data-units="12-12"' in html
    assert "without a position" in html
    assert 'href="/devices/spare"' in html
    assert html.index('data-device="node2"') < html.index('data-device="node1"')

    status, html = _get(client, "/sites/bj-dc1?rack=B01")
    assert status == 200
    assert 'id="rack-B01"' in html
    assert 'id="rack-A01"' not in html
    status, html = _get(client, "/sites/bj-dc1?rack=Z99")
    assert status == 404
    assert "no rack &#39;Z99&#39;" in html


def test_another_site_is_a_404_page_like_a_missing_one(client: TestClient) -> None:
    _seeded(client)
    ok(client.post("auth/login", json={"username": "sam", "password": PASSWORD}))
    hidden_status, hidden = _get(client, "/sites/bj-dc1")
    missing_status, missing = _get(client, "/sites/nowhere")
    assert hidden_status == missing_status == 404
    assert hidden.replace("bj-dc1", "nowhere") == missing
    assert _get(client, "/sites/sh-br12")[0] == 200
