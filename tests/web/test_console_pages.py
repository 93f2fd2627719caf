"""The console pages without a browser: who sees which session and which buttons (the fake
console driver stands for the device; the browser test drives the simulated rack)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.drivers.fake import FakeDriver
from app.config import Settings
from app.main import create_app
from app.web.consoles import REPLAY_CSP
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, site

PASSWORD = "correct horse battery staple"
PEOPLE = {
    "olga": [{"role": "operator", "sites": ["bj-dc1"]}],
    "vera": [{"role": "viewer", "sites": ["bj-dc1"]}],
    "sam": [{"role": "operator", "sites": ["sh-br12"]}],
}


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    """A started app whose consoles open on the fake driver; web01 at bj-dc1, people seeded.
    The client's base is the site root (pages); the admin's bearer token goes per call."""
    quiet = settings.model_copy(update={"poll_power": False})
    fake = FakeDriver()
    with TestClient(create_app(quiet, drivers={"ipmi": fake}), raise_server_exceptions=False) as c:
        c.base_url = c.base_url.join("/api/v1/")
        c.headers["Authorization"] = f"Bearer {login(c, 'admin', ADMIN_PASSWORD)}"
        site(c, "bj-dc1")
        site(c, "sh-br12")
        device(c, "web01")
        path(c, "web01", kind="ipmi", address="10.0.0.1", username="u", secret="bmc-secret")
        for username, grants in PEOPLE.items():
            body = {"username": username, "password": PASSWORD, "grants": grants}
            ok(c.post("users", json=body), 201)
        del c.headers["Authorization"]
        c.base_url = c.base_url.join("/")
        yield c


def _as(client: TestClient, username: str) -> TestClient:
    client.cookies.clear()
    password = ADMIN_PASSWORD if username == "admin" else PASSWORD
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return client


def _open(client: TestClient, **body: Any) -> dict[str, Any]:
    _as(client, "olga")
    csrf = client.cookies.get("rackhand_csrf") or ""
    response = client.post(
        "/api/v1/devices/web01/consoles", json=body, headers={"X-CSRF-Token": csrf}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_operators_get_the_controls_viewers_none(app_client: TestClient) -> None:
    console = _open(app_client, ticket="INC-42")
    page = app_client.get(f"/consoles/{console['id']}")
    assert page.status_code == 200
    assert 'id="terminal"' in page.text
    assert "Take the keyboard" in page.text
    assert "Power cycle" in page.text
    assert "Close session" in page.text  # she opened it
    assert "Take over (admin)" not in page.text

    listing = app_client.get("/consoles")
    assert f'href="/consoles/{console["id"]}"' in listing.text
    assert "Open a console" in listing.text

    _as(app_client, "vera")  # a viewer: sees the session, no controls (the stream refuses her)
    page = app_client.get(f"/consoles/{console['id']}")
    assert page.status_code == 200
    assert 'id="terminal"' in page.text
    for control in ("Take the keyboard", "Power cycle", "Send break", "Close session"):
        assert control not in page.text
    assert "Open a console" not in app_client.get("/consoles").text

    _as(app_client, "admin")  # an admin may close another's session and take the keyboard over
    page = app_client.get(f"/consoles/{console['id']}")
    assert "Close session" in page.text
    assert "Take over (admin)" in page.text


def test_another_sites_session_is_a_404_page(app_client: TestClient) -> None:
    console = _open(app_client)
    _as(app_client, "sam")
    for url in (f"/consoles/{console['id']}", f"/recordings/{console['id']}"):
        page = app_client.get(url)
        assert page.status_code == 404
        assert "Not found" in page.text
    assert console["id"] not in app_client.get("/consoles").text
    missing = app_client.get("/consoles/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404


def test_filters_and_the_closed_session_links_its_recording(app_client: TestClient) -> None:
    console = _open(app_client, ticket="INC-43")
    csrf = app_client.cookies.get("rackhand_csrf") or ""
    closed = app_client.delete(f"/api/v1/consoles/{console['id']}", headers={"X-CSRF-Token": csrf})
    assert closed.status_code == 204
    listing = app_client.get("/consoles", params={"site": "bj-dc1", "device": "web01"})
    assert f'href="/recordings/{console["id"]}"' in listing.text
    api = app_client.get("/api/v1/consoles", params={"site": "sh-br12"})  # the same filter
    assert api.json()["items"] == []
    assert len(app_client.get("/api/v1/consoles", params={"site": "bj-dc1"}).json()["items"]) == 1
    other = app_client.get("/consoles", params={"site": "sh-br12"})
    assert console["id"] not in other.text
    assert "No closed sessions for these filters" in other.text

    page = app_client.get(f"/consoles/{console['id']}")  # over: no terminal, the recording
    assert "This session has ended" in page.text
    assert 'id="terminal"' not in page.text
    assert f'href="/recordings/{console["id"]}"' in page.text

    replay = app_client.get(f"/recordings/{console['id']}")
    assert replay.status_code == 200
    assert "INC-43" in replay.text
    assert "olga" in replay.text
    assert replay.headers["Content-Security-Policy"] == REPLAY_CSP
    assert "'wasm-unsafe-eval'" in REPLAY_CSP
    assert "'unsafe-eval'" not in REPLAY_CSP.replace("'wasm-unsafe-eval'", "")


def test_pages_need_a_login(app_client: TestClient) -> None:
    app_client.cookies.clear()
    page = app_client.get("/consoles", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/consoles"
