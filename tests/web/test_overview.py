"""The overview's counts: devices by kind, power states, unreachable BMCs, running jobs and
open consoles, per site the viewer can see, each a link to the list it counts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from agents.drivers.base import Unreachable
from agents.drivers.fake import FakeDriver
from agents.protocol import IpmiPath, PowerState
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, poll_power, site
from tests.live import until

PEOPLE_PASSWORD = "correct horse battery staple"
PAGE = "http://testserver"


@pytest.fixture
def fake() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def fleet(settings: Settings, fake: FakeDriver) -> Iterator[TestClient]:
    """Admin client; bj-dc1: web01..web03 (ipmi 10.0.0.N) and pdu1; sh-br12: db1; sam is an
    operator at sh-br12 only."""
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet, drivers={"ipmi": fake}), raise_server_exceptions=False) as c:
        c.base_url = c.base_url.join("/api/v1/")
        c.headers["Authorization"] = f"Bearer {login(c, 'admin', ADMIN_PASSWORD)}"
        site(c, "bj-dc1", name="Beijing DC1")
        site(c, "sh-br12", name="Shanghai branch 12", kind="branch")
        for n in range(1, 4):
            device(c, f"web{n:02d}")
            path(c, f"web{n:02d}", kind="ipmi", address=f"10.0.0.{n}", username="u",
                 secret="bmc-secret")  # fmt: skip
        device(c, "pdu1", kind="pdu")
        device(c, "db1", site="sh-br12")
        grants = [{"role": "operator", "sites": ["sh-br12"]}]
        body = {"username": "sam", "password": PEOPLE_PASSWORD, "grants": grants}
        ok(c.post("users", json=body), 201)
        yield c


def _page(client: TestClient, username: str, password: str = PEOPLE_PASSWORD) -> str:
    ok(client.post("auth/login", json={"username": username, "password": password}))
    response = client.get(f"{PAGE}/")
    assert response.status_code == 200, response.text
    return str(response.text)


def _count(html: str, label: str) -> str:
    """The number a count link shows, found by its accessible name."""
    marker = f'aria-label="{label}">'
    assert marker in html, label
    return html.split(marker, 1)[1].split("<", 1)[0]


def test_counts_per_site_each_linked_to_its_list(fleet: TestClient, fake: FakeDriver) -> None:
    fake.machine(IpmiPath("10.0.0.1", "u", "x")).power = PowerState.ON
    fake.machine(IpmiPath("10.0.0.2", "u", "x")).fail = Unreachable("did not answer")
    poll_power(fleet)
    console = ok(fleet.post("devices/web01/consoles", json={"via": "ipmi"}), 201)
    fake.machine(IpmiPath("10.0.0.3", "u", "x")).delay = 3.0
    job = ok(fleet.post("devices/web03/power", json={"action": "on", "wait": 0}), 202)["job"]

    html = _page(fleet, "admin", ADMIN_PASSWORD)
    counts = {
        "4 devices at bj-dc1": "4",
        "3 server at bj-dc1": "3",
        "1 pdu at bj-dc1": "1",
        "1 on at bj-dc1": "1",
        "1 off at bj-dc1": "1",  # web03, read off before its job
        "2 unknown at bj-dc1": "2",  # web02 never answered, pdu1 never read
        "1 unreachable BMCs at bj-dc1": "1",
        "1 running jobs at bj-dc1": "1",
        "1 open consoles at bj-dc1": "1",
        "1 devices at sh-br12": "1",
        "0 running jobs at sh-br12": "0",
    }
    for label, number in counts.items():
        assert _count(html, label) == number
    for href in (
        "/devices?site=bj-dc1&amp;kind=server",
        "/devices?site=bj-dc1&amp;power=off",
        "/devices?site=bj-dc1&amp;power=unreachable",
        "/jobs?site=bj-dc1&amp;status=running",
        "/consoles?site=bj-dc1",
        "/sites/sh-br12",
    ):
        assert f'href="{href}"' in html, href

    until(lambda: ok(fleet.get(f"jobs/{job}"))["status"] != "running", f"job {job} to end")
    html = _page(fleet, "admin", ADMIN_PASSWORD)
    assert _count(html, "0 running jobs at bj-dc1") == "0"
    assert _count(html, "2 on at bj-dc1") == "2"
    ok(fleet.delete(f"consoles/{console['id']}"), 204)
    assert _count(_page(fleet, "admin", ADMIN_PASSWORD), "0 open consoles at bj-dc1") == "0"


def test_a_site_scoped_user_counts_only_their_sites(fleet: TestClient) -> None:
    html = _page(fleet, "sam")
    assert "Beijing DC1" not in html
    assert "bj-dc1" not in html
    assert _count(html, "1 server at sh-br12") == "1"
    assert _count(html, "1 unknown at sh-br12") == "1"


def test_the_overview_needs_a_login(fleet: TestClient) -> None:
    response = fleet.get(f"{PAGE}/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/"
