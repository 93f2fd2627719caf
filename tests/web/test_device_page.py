"""The device page as each role sees it: facts, paths with secrets as "set" / "not set" and
their last outcome, buttons only for operators, another site's device a 404 page."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from agents.drivers.base import Unreachable
from agents.drivers.fake import FakeDriver
from agents.protocol import IpmiPath, PowerState
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, poll_power, rack, site

PEOPLE_PASSWORD = "correct horse battery staple"
PAGE = "http://testserver"
BMC_SECRET = "bmc-secret-never-shown"
PEOPLE = {
    "olga": [{"role": "operator", "sites": ["bj-dc1"]}],
    "vera": [{"role": "viewer", "sites": ["bj-dc1"]}],
    "sam": [{"role": "operator", "sites": ["sh-br12"]}],
}


@pytest.fixture
def fake() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def fleet(settings: Settings, fake: FakeDriver) -> Iterator[TestClient]:
    """Admin client; bj-dc1 rack A01: web01 (U10, ipmi with a secret, ssh without) and web02
    (ipmi 10.0.0.2); sh-br12: db1."""
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet, drivers={"ipmi": fake}), raise_server_exceptions=False) as c:
        c.base_url = c.base_url.join("/api/v1/")
        c.headers["Authorization"] = f"Bearer {login(c, 'admin', ADMIN_PASSWORD)}"
        site(c, "bj-dc1", name="Beijing DC1")
        site(c, "sh-br12", name="Shanghai branch 12", kind="branch")
        rack(c, "A01", "bj-dc1")
        device(c, "web01", rack="A01", position_u=10, serial="SN-1", tags=["web", "db"],
               attributes={"owner": "team-a"})  # fmt: skip
        path(c, "web01", kind="ipmi", address="10.0.0.1", username="u", secret=BMC_SECRET)
        path(c, "web01", kind="ssh", address="10.0.1.1", username="root")
        device(c, "web02")
        path(c, "web02", kind="ipmi", address="10.0.0.2", username="u", secret=BMC_SECRET)
        device(c, "db1", site="sh-br12")
        for username, grants in PEOPLE.items():
            body = {"username": username, "password": PEOPLE_PASSWORD, "grants": grants}
            ok(c.post("users", json=body), 201)
        yield c


def _as(client: TestClient, username: str, url: str) -> tuple[int, str]:
    password = ADMIN_PASSWORD if username == "admin" else PEOPLE_PASSWORD
    ok(client.post("auth/login", json={"username": username, "password": password}))
    response = client.get(f"{PAGE}{url}")
    return response.status_code, response.text


def test_facts_and_paths_with_secrets_only_as_set(fleet: TestClient) -> None:
    status, html = _as(fleet, "vera", "/devices/web01")
    assert status == 200
    assert BMC_SECRET not in html
    assert 'href="/sites/bj-dc1?rack=A01#rack-A01">A01</a>, U10' in html
    assert "SN-1" in html
    assert "team-a" in html
    assert 'href="/devices?tag=web"' in html
    ipmi, ssh = html.split('data-path="ipmi"')[1], html.split('data-path="ssh"')[1]
    assert html.index('data-path="ipmi"') < html.index('data-path="ssh"')  # priority order
    assert '<span class="secret-set">set</span>' in ipmi.split("</tr>")[0]
    assert ">not set</span>" in ssh.split("</tr>")[0]
    assert "not checked yet" in ipmi.split("</tr>")[0]
    assert "device.created" in html
    assert 'href="/audit?device=web01"' in html


def test_a_viewer_gets_no_buttons_an_operator_does(fleet: TestClient) -> None:
    _, seen = _as(fleet, "vera", "/devices/web01")
    buttons = [tag.split(">")[0] for tag in seen.split('id="main"')[1].split("<button")[1:]]
    assert len(buttons) == 3  # only the health reads, which viewers may make
    assert all("hx-get=" in button and "data-read-" in button for button in buttons)
    assert "device.js" not in seen
    assert "<dialog" not in seen
    _, operated = _as(fleet, "olga", "/devices/web01")
    for action in ("status", "on", "off", "soft", "cycle", "reset"):
        assert f'data-power="{action}"' in operated
    for boot in ("bios", "pxe", "disk"):
        assert f'data-boot="{boot}"' in operated
    assert "data-console" in operated
    assert "device.js" in operated
    assert '<dialog id="confirm"' in operated


def test_another_sites_device_is_a_404_page_like_a_missing_one(fleet: TestClient) -> None:
    hidden_status, hidden = _as(fleet, "sam", "/devices/web01")
    missing_status, missing = _as(fleet, "sam", "/devices/web99")
    assert hidden_status == missing_status == 404
    assert hidden.replace("web01", "web99") == missing
    assert "no device &#39;web01&#39;" in hidden
    assert _as(fleet, "sam", "/devices/db1")[0] == 200


def test_last_power_read_and_each_paths_outcome(fleet: TestClient, fake: FakeDriver) -> None:
    fake.machine(IpmiPath("10.0.0.1", "u", "x")).power = PowerState.ON
    fake.machine(IpmiPath("10.0.0.2", "u", "x")).fail = Unreachable("did not answer")
    poll_power(fleet)
    _, web01 = _as(fleet, "vera", "/devices/web01")
    assert "data-power-state>on</span>" in web01
    assert " via ipmi" in web01
    row = web01.split('data-path="ipmi"')[1].split("</tr>")[0]
    assert "answered the last power read" in row
    _, web02 = _as(fleet, "vera", "/devices/web02")
    assert "Last read got no answer" in web02
    row = web02.split('data-path="ipmi"')[1].split("</tr>")[0]
    assert "failed" in row
    assert "did not answer" in row


def test_a_console_path_shows_its_last_session(fleet: TestClient, fake: FakeDriver) -> None:
    console = ok(fleet.post("devices/web01/consoles", json={"via": "ipmi"}), 201)
    ok(fleet.delete(f"consoles/{console['id']}"), 204)
    _, html = _as(fleet, "olga", "/devices/web01")
    row = html.split('data-path="ipmi"')[1].split("</tr>")[0]
    assert "a console attached" in row
    assert f'href="/recordings/{console["id"]}"' in html  # its recording, for operators
    _, seen = _as(fleet, "vera", "/devices/web01")
    assert "/recordings/" not in seen
    assert "operators only" in seen
    fake.machine(IpmiPath("10.0.0.2", "u", "x")).fail = Unreachable("no answer to SOL")
    assert fleet.post("devices/web02/consoles", json={"via": "ipmi"}).status_code == 502
    _, html = _as(fleet, "olga", "/devices/web02")
    row = html.split('data-path="ipmi"')[1].split("</tr>")[0]
    assert "failed" in row
    assert "no answer to SOL" in row


def test_the_page_shows_the_power_read_the_api_answers(fleet: TestClient, fake: FakeDriver) -> None:
    assert ok(fleet.get("devices/web02"))["power"] is None  # never read
    fake.machine(IpmiPath("10.0.0.2", "u", "x")).fail = Unreachable("did not answer")
    poll_power(fleet)
    power = ok(fleet.get("devices/web02"))["power"]
    assert (power["state"], power["reachable"], power["path"]) == ("unknown", False, None)
    assert "did not answer" in power["message"]
    assert BMC_SECRET not in str(power)
    listed = {d["name"]: d for d in ok(fleet.get("devices"))["items"]}
    assert listed["web02"]["power"] == power  # the list answers the same read
    _, html = _as(fleet, "vera", "/devices/web02")
    checked = datetime.fromisoformat(power["checked_at"]).isoformat()
    assert f'read <time datetime="{checked}"' in html
    assert power["message"] in html


def test_recordings_are_the_newest_closed_sessions_with_one(
    fleet: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.web.device_page.RECORDINGS", 2)
    ids = []
    for _ in range(3):
        console = ok(fleet.post("devices/web01/consoles", json={"via": "ipmi"}), 201)
        ok(fleet.delete(f"consoles/{console['id']}"), 204)
        ids.append(console["id"])
    _, html = _as(fleet, "olga", "/devices/web01")
    assert [f'href="/recordings/{i}"' in html for i in ids] == [False, True, True]
    assert html.index(f"/recordings/{ids[2]}") < html.index(f"/recordings/{ids[1]}")
