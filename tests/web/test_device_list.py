"""/devices without a browser: paging by cursor, the htmx part alone, filters said back with
the API's words, the reachability filter, and actions only for those who may act."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import select

from agents.protocol import PowerState
from app.inventory.models import Device
from app.jobs.engine import upsert_power
from app.web.device_list import PowerFilter
from tests.conftest import ADMIN_PASSWORD
from tests.factories import device, ok, site

PASSWORD = "correct horse battery staple"


def as_browser(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    """The same client, now a browser of `username` (session cookie, no bearer token)."""
    client.base_url = client.base_url.join("/")
    client.headers.pop("Authorization", None)
    client.cookies.clear()
    ok(client.post("/api/v1/auth/login", json={"username": username, "password": password}))
    client.follow_redirects = False
    return client


def seed_people(client: TestClient) -> None:
    site(client, "bj-dc1")
    site(client, "sh-br12")
    for username, role, where in (("vera", "viewer", "bj-dc1"), ("sam", "operator", "sh-br12"),
                                  ("olga", "operator", "bj-dc1")):  # fmt: skip
        grants = [{"role": role, "sites": [where]}]
        body = {"username": username, "password": PASSWORD, "grants": grants}
        ok(client.post("users", json=body), 201)


def _mark(client: TestClient, names: dict[str, bool]) -> None:
    """Store power reads as the poller does: `True` answered (on), `False` no answer."""

    async def write() -> None:
        now = datetime.now(UTC)
        async with client.app.state.write_sessions() as session:  # type: ignore[attr-defined]
            found = await session.execute(
                select(Device.name, Device.id).where(Device.name.in_(names))
            )
            ids = {row.name: row.id for row in found}
            rows = [
                {"device_id": ids[name], "state": "on" if answered else "unknown",
                 "reachable": answered, "path": "ipmi",
                 "message": "" if answered else "no answer from 10.0.0.9", "checked_at": now,
                 "last_seen_at": now if answered else None, "changed_at": now}
                for name, answered in names.items()
            ]  # fmt: skip
            await upsert_power(session, rows)
            await session.commit()

    client.portal.call(write)  # type: ignore[union-attr]


def test_pages_of_a_hundred_by_cursor_and_the_htmx_part(client: TestClient) -> None:
    site(client, "bj-dc1")
    rows = [{"name": f"web{n:03}", "kind": "server", "site": "bj-dc1"} for n in range(1, 106)]
    ok(client.post("devices/import", json=rows))
    pages = as_browser(client, "admin", ADMIN_PASSWORD)
    first = pages.get("/devices", params={"select": "web[001-105]"})
    assert first.status_code == 200
    assert first.text.count('<th scope="row">') == 100
    assert "105 devices match" in first.text
    assert "First page" not in first.text
    start = first.text.index('href="/devices?select=web%5B001-105%5D&amp;cursor=')
    link = first.text[start + 6 : first.text.index('"', start + 6)].replace("&amp;", "&")
    second = pages.get(link)
    assert second.text.count('<th scope="row">') == 5
    assert ">web105<" in second.text
    assert "Next page" not in second.text
    assert "First page" in second.text
    htmx = {"HX-Request": "true"}
    part = pages.get("/devices", params={"q": "web10", "sort": "-name"}, headers=htmx)
    assert part.status_code == 200
    assert "<h1>" not in part.text  # only the results, for htmx to swap
    assert part.headers["HX-Push-Url"] == "/devices?q=web10&sort=-name"
    names = [line for line in part.text.splitlines() if 'href="/devices/web' in line]
    assert [n.split(">web")[1][:3] for n in names] == ["105", "104", "103", "102", "101", "100"]


def test_wrong_filters_are_said_with_the_api_s_words(client: TestClient) -> None:
    site(client, "bj-dc1")
    pages = as_browser(client, "admin", ADMIN_PASSWORD)
    bad_range = pages.get("/devices", params={"select": "web[1-"})
    assert bad_range.status_code == 422
    assert 'role="alert"' in bad_range.text
    assert "Node range" in bad_range.text
    unknown = pages.get("/devices", params={"site": "nowhere"})
    assert unknown.status_code == 404
    assert "no site &#39;nowhere&#39;" in unknown.text
    kind = pages.get("/devices", params={"kind": "toaster"})
    assert kind.status_code == 422
    assert "kind: use one of" in kind.text
    swapped = pages.get("/devices", params={"site": "nowhere"}, headers={"HX-Request": "true"})
    assert swapped.status_code == 200
    assert "no site" in swapped.text


def test_unreachable_bmcs_are_a_filter_of_the_api_and_the_page(client: TestClient) -> None:
    site(client, "bj-dc1")
    for name in ("db1", "db2", "db3"):
        device(client, name)
    _mark(client, {"db1": True, "db2": False})
    api = ok(client.get("devices", params={"reachable": "false"}))
    assert [one["name"] for one in api["items"]] == ["db2"]
    api = ok(client.get("devices", params={"reachable": "true"}))
    assert [one["name"] for one in api["items"]] == ["db1"]
    pages = as_browser(client, "admin", ADMIN_PASSWORD)
    page = pages.get("/devices", params={"power": "unreachable"})
    assert ">db2<" in page.text
    assert ">db1<" not in page.text
    assert ">db3<" not in page.text
    assert "no answer" in page.text
    assert "no answer from 10.0.0.9" in page.text
    # Reachability cannot be sent to POST /power: "all matching" has no targets then.
    assert '<script type="application/json" id="bulk-targets">null</script>' in page.text
    # The choices are every power state the API filters on, and no answer.
    assert {*PowerFilter} == {*PowerState, PowerFilter.UNREACHABLE}
    assert '<option value="unreachable" selected>BMC unreachable (last read failed)</option>' in (
        page.text
    )
    wrong = pages.get("/devices", params={"power": "sleeping"})
    assert wrong.status_code == 422
    assert "power: use one of on, off, unknown, unreachable" in wrong.text


def test_only_those_who_may_act_get_checkboxes(client: TestClient) -> None:
    seed_people(client)
    device(client, "node1")
    device(client, "br-web01", site="sh-br12")
    dry = ok(client.post("power", json={"select": "node1,br-web01", "action": "cycle",
                                        "dry_run": True}))  # fmt: skip
    assert dry["sites"] == {"bj-dc1": 1, "sh-br12": 1}
    vera = as_browser(client, "vera").get("/devices")
    assert ">node1<" in vera.text
    assert ">br-web01<" not in vera.text
    assert 'type="checkbox"' not in vera.text
    assert "bulk-dialog" not in vera.text
    olga = as_browser(client, "olga").get("/devices")
    assert 'aria-label="Select node1"' in olga.text
    assert "bulk-dialog" in olga.text
    assert "data-operable" not in olga.text  # which rows may be ticked is said by the rows
    sam = as_browser(client, "sam")
    listed = sam.get("/devices")
    assert ">br-web01<" in listed.text
    assert ">node1<" not in listed.text
    assert sam.get("/devices", params={"site": "bj-dc1"}).status_code == 404
