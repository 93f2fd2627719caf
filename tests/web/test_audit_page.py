"""The audit page without a browser: filters as the API reads them, site scoping, and who is
offered the chain's verification (the browser test drives the page itself)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD
from tests.factories import device, ok, site

PASSWORD = "correct horse battery staple"
PEOPLE = {
    "olga": [{"role": "operator", "sites": ["bj-dc1"]}],
    "vera": [{"role": "viewer", "sites": ["bj-dc1"]}],
    "sam": [{"role": "operator", "sites": ["sh-br12"]}],
}


@pytest.fixture
def fleet(client: TestClient) -> TestClient:
    """Two sites with a device each, and people scoped to them."""
    site(client, "bj-dc1")
    site(client, "sh-br12")
    device(client, "node1", site="bj-dc1")
    device(client, "br-web01", site="sh-br12")
    for username, grants in PEOPLE.items():
        body: dict[str, Any] = {"username": username, "password": PASSWORD, "grants": grants}
        ok(client.post("users", json=body), 201)
    return client


def page(client: TestClient, username: str, path: str) -> Any:
    """`path` as `username` sees it, logged in with the dashboard's session cookie."""
    client.cookies.clear()
    password = ADMIN_PASSWORD if username == "admin" else PASSWORD
    login = {"username": username, "password": password}
    ok(client.post("http://testserver/api/v1/auth/login", json=login))
    return client.get(f"http://testserver{path}", headers={"Authorization": ""})


def test_the_page_lists_what_the_filters_pick_newest_first(fleet: TestClient) -> None:
    ok(fleet.patch("devices/node1", json={"model": "R650"}, headers={"X-Ticket": "INC-7"}))
    shown = page(fleet, "admin", "/audit?device=node1")
    assert shown.status_code == 200
    assert "device.updated" in shown.text
    assert "device.created" in shown.text
    assert shown.text.index("device.updated") < shown.text.index("device.created")
    assert "INC-7" in shown.text
    assert "br-web01" not in shown.text
    # The export links carry the same filters to the API's export.
    assert "/api/v1/audit/export?device=node1&amp;format=csv" in shown.text
    assert "/api/v1/audit/export?device=node1&amp;format=jsonl" in shown.text
    assert "data-verify" in shown.text  # an admin of every site may verify


def test_a_bad_time_range_says_the_apis_own_words(fleet: TestClient) -> None:
    since, until = "2026-12-06T12:00:00Z", "2026-12-06T11:00:00Z"
    shown = page(fleet, "admin", f"/audit?since={since}&until={until}")
    assert shown.status_code == 200
    assert "`since` must be before `until`" in shown.text
    api = fleet.get("audit", params={"since": since, "until": until})
    assert api.status_code == 422
    assert api.json()["detail"] == "`since` must be before `until`"
    naive = page(fleet, "admin", "/audit?since=2026-12-06T12:00")
    assert "`since`" in naive.text
    assert "timezone" in naive.text
    assert "No events match" not in naive.text
    assert "Export CSV" not in naive.text


def test_outcome_is_a_filter_of_the_api_and_the_page(fleet: TestClient) -> None:
    page(fleet, "vera", "/admin/users")  # refused, audited as denied
    fleet.cookies.clear()
    denied = ok(fleet.get("audit", params={"outcome": "denied"}))["items"]
    assert denied
    assert {event["outcome"] for event in denied} == {"denied"}
    assert fleet.get("audit", params={"outcome": "maybe"}).status_code == 422
    shown = page(fleet, "admin", "/audit?outcome=denied")
    assert "access.denied" in shown.text
    assert "device.created" not in shown.text
    assert "`outcome`: one of" in page(fleet, "admin", "/audit?outcome=maybe").text


def test_a_viewer_sees_her_sites_events_only_and_no_verify(fleet: TestClient) -> None:
    shown = page(fleet, "vera", "/audit")
    assert shown.status_code == 200
    assert "node1" in shown.text
    assert "br-web01" not in shown.text
    assert "sh-br12" not in shown.text
    assert "user.created" not in shown.text  # site-less events need an all-sites grant
    assert "data-verify" not in shown.text
    assert "Export CSV" in shown.text  # her export is scoped by the API likewise


def test_sam_sees_nothing_of_bj_dc1_even_when_he_asks_for_it(fleet: TestClient) -> None:
    shown = page(fleet, "sam", "/audit?site=bj-dc1")
    assert shown.status_code == 200
    assert "node1" not in shown.text
    assert "No events match" in shown.text
    assert '<option value="bj-dc1" selected>' in shown.text  # the filter he asked for, kept
    assert "br-web01" in page(fleet, "sam", "/audit").text


def test_paging_goes_to_older_events_with_the_same_filters(fleet: TestClient) -> None:
    for n in range(55):
        ok(fleet.patch("devices/node1", json={"model": f"R{n}"}))
    first = page(fleet, "admin", "/audit?type=device.updated")
    assert first.text.count('<tr data-seq="') == 50
    link = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    assert link.startswith("/audit?type=device.updated&amp;cursor=")
    second = fleet.get("http://testserver" + link.replace("&amp;", "&"))
    assert second.text.count('<tr data-seq="') == 5
    assert 'rel="next"' not in second.text
    assert "Newest events" in second.text


def test_logged_out_goes_to_login_and_comes_back(fleet: TestClient) -> None:
    fleet.cookies.clear()
    shown = fleet.get(
        "http://testserver/audit?device=node1",
        headers={"Authorization": ""},
        follow_redirects=False,
    )
    assert shown.status_code == 303
    assert shown.headers["location"] == "/login?next=/audit%3Fdevice%3Dnode1"
