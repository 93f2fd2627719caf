"""What every page shares: who may see it, how refusals look, and the headers that keep what a
page shows of stored data from ever running as script."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD
from tests.factories import site


def _pages(client: TestClient) -> TestClient:
    client.base_url = client.base_url.join("/")
    client.follow_redirects = False
    return client


def test_a_page_without_a_session_sends_to_the_login_and_back(anonymous: TestClient) -> None:
    pages = _pages(anonymous)
    answer = pages.get("/consoles?site=bj-dc1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/consoles%3Fsite%3Dbj-dc1"


def test_an_htmx_swap_after_the_session_ended_sends_the_page_to_the_login(
    anonymous: TestClient,
) -> None:
    pages = _pages(anonymous)
    answer = pages.get("/devices?q=web", headers={"HX-Request": "true"})
    assert answer.status_code == 204  # nothing to swap into the results: the page goes
    assert answer.headers["hx-redirect"] == "/login?next=/devices%3Fq%3Dweb"


def test_a_forged_session_cookie_is_refused_and_audited(client: TestClient) -> None:
    token = client.headers["Authorization"]
    pages = _pages(client)
    del pages.headers["Authorization"]
    pages.cookies.set("rackhand_session", "forged-cookie")
    answer = pages.get("/")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=/")
    pages.cookies.clear()
    pages.headers["Authorization"] = token
    events = pages.get("/api/v1/audit", params={"type": "auth.rejected"}).json()["items"]
    assert any(event["details"].get("credential") == "session" for event in events), events


def test_pages_forbid_inline_script_and_framing(client: TestClient) -> None:
    pages = _pages(client)
    pages.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    answer = pages.get("/")
    assert answer.status_code == 200
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "frame-ancestors 'none'" in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
    assert "<script>" not in answer.text  # every script is a file of ours


def test_stored_names_are_escaped_on_pages(client: TestClient) -> None:
    site(client, "xss", name="<script>alert(1)</script>")
    pages = _pages(client)
    pages.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    text = pages.get("/").text
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_refusals_are_pages_and_the_api_keeps_json(client: TestClient) -> None:
    pages = _pages(client)
    pages.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    missing = pages.get("/no-such-page", headers={"Accept": "text/html"})  # as browsers ask
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "Not found" in missing.text
    api = pages.get("/api/v1/no-such-thing", headers={"Accept": "text/html"})
    assert api.status_code == 404
    assert api.json()["error"] == "NotFound"
    script = pages.get("/elsewhere/api/v1/devices")  # a script with a wrong base URL
    assert script.status_code == 404
    assert script.json()["error"] == "NotFound"


def test_the_login_page_only_returns_to_this_site(anonymous: TestClient) -> None:
    pages = _pages(anonymous)
    evil = ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil.example",
            "/\n/evil.example", "/\r/evil.example", "/\x7f/x", "javascript:alert(1)")  # fmt: skip
    for target in evil:
        page = pages.get("/login", params={"next": target}).text
        assert 'data-next="/"' in page, target
    assert 'data-next="/devices/web01"' in pages.get("/login?next=/devices/web01").text
