"""GET /jobs: the audit log's filter names, cursor paging, and only the jobs a caller may see."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import login
from tests.factories import device, error, ok, path, site


def _done(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        job: dict[str, Any] = ok(client.get(f"jobs/{job_id}"))
        if job["status"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def _ids(client: TestClient, **params: Any) -> list[str]:
    page = ok(client.get("jobs", params=params))
    assert page["next_cursor"] is None
    return [job["id"] for job in page["items"]]


def _three_jobs(fleet: TestClient) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A: status of web01-02 (INC-42); B: web03 on (CHG-7); C: web01 to BIOS; oldest first."""
    bulk = {"select": "web[01-02]", "action": "status", "ticket": "INC-42"}
    a = _done(fleet, ok(fleet.post("power", json=bulk), 202)["id"])
    on = {"action": "on", "ticket": "CHG-7"}
    b = _done(fleet, ok(fleet.post("devices/web03/power", json=on))["job"])
    c = _done(fleet, ok(fleet.post("devices/web01/boot", json={"device": "bios"}))["job"])
    return a, b, c


def test_each_filter_narrows_the_list(fleet: TestClient) -> None:
    a, b, c = _three_jobs(fleet)
    every = [c["id"], b["id"], a["id"]]
    assert _ids(fleet) == every
    assert _ids(fleet, ticket="INC-42") == [a["id"]]
    assert _ids(fleet, ticket="INC-404") == []
    assert _ids(fleet, device="web01") == [c["id"], a["id"]]
    web03 = ok(fleet.get("devices/web03"))["id"]
    assert _ids(fleet, device=str(web03)) == [b["id"]]
    assert _ids(fleet, device="web01", ticket="INC-42") == [a["id"]]
    assert _ids(fleet, action="bios") == [c["id"]]
    assert _ids(fleet, action="on") == [b["id"]]
    assert _ids(fleet, status="succeeded") == every
    assert _ids(fleet, status="failed") == []
    assert _ids(fleet, actor="admin") == every
    assert _ids(fleet, actor="bob") == []
    assert _ids(fleet, site="bj-dc1") == every
    assert _ids(fleet, since=b["created_at"]) == [c["id"], b["id"]]
    assert _ids(fleet, until=b["created_at"]) == [a["id"]]
    assert _ids(fleet, since=b["created_at"], until=c["created_at"]) == [b["id"]]


def test_bad_filters_say_what_to_fix(fleet: TestClient) -> None:
    _three_jobs(fleet)
    assert "no site 'nowhere'" in error(fleet.get("jobs", params={"site": "nowhere"}), 404)
    assert "no device 'nope'" in error(fleet.get("jobs", params={"device": "nope"}), 404)
    assert "action" in error(fleet.get("jobs", params={"action": "explode"}), 422)
    assert "status" in error(fleet.get("jobs", params={"status": "done"}), 422)
    since, until = "2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z"
    detail = error(fleet.get("jobs", params={"since": since, "until": until}), 422)
    assert "`since` must be before `until`" in detail
    for listing in ("jobs", "audit"):  # a time without its zone would be a guess
        naive = fleet.get(listing, params={"since": "2026-12-01T00:00:00"})
        assert "since: Input should have timezone info" in error(naive, 422)
    response = fleet.get("jobs", params={"tiket": "INC-42"})
    assert response.json()["error"] == "InvalidInput"
    detail = error(response, 400)
    assert "unknown query parameter 'tiket' (did you mean 'ticket'?)" in detail
    assert (
        "takes: action, actor, cursor, device, limit, since, site, status, ticket, until" in detail
    )


def test_the_cursor_walks_every_job_once(fleet: TestClient) -> None:
    a, b, c = _three_jobs(fleet)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = ok(fleet.get("jobs", params=params))
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [c["id"], b["id"], a["id"]]
    page = ok(fleet.get("jobs", params={"limit": 1, "device": "web01"}))
    assert [job["id"] for job in page["items"]] == [c["id"]]
    rest = ok(fleet.get("jobs", params={"device": "web01", "cursor": page["next_cursor"]}))
    assert [job["id"] for job in rest["items"]] == [a["id"]]
    assert "cursor" in error(fleet.get("jobs", params={"cursor": "garbage!"}), 400)


def test_a_deleted_devices_jobs_are_found_by_its_name(fleet: TestClient) -> None:
    _, b, _ = _three_jobs(fleet)
    assert fleet.delete("devices/web03").status_code == 204
    assert _ids(fleet, device="web03") == [b["id"]]


def test_a_site_scoped_caller_filters_only_what_it_may_see(fleet: TestClient) -> None:
    site(fleet, "sh-br12", kind="branch")
    device(fleet, "br01", site="sh-br12")
    path(fleet, "br01", kind="ipmi", address="10.0.1.1", username="u", secret="s")
    a, _, _ = _three_jobs(fleet)
    bulk = {"select": "web01,br01", "action": "status"}
    both = _done(fleet, ok(fleet.post("power", json=bulk), 202)["id"])
    grants = [{"role": "operator", "sites": ["sh-br12"]}]
    body = {"username": "branch-op", "password": "branch-password-1", "grants": grants}
    ok(fleet.post("users", json=body), 201)
    fleet.headers["Authorization"] = f"Bearer {login(fleet, 'branch-op', 'branch-password-1')}"
    mine = _done(fleet, ok(fleet.post("devices/br01/power", json={"action": "status"}))["job"])

    assert _ids(fleet) == [mine["id"]]
    assert _ids(fleet, site="sh-br12") == [mine["id"]]  # never the job that also touched bj-dc1
    assert _ids(fleet, device="br01") == [mine["id"]]
    assert both["id"] not in _ids(fleet, status="succeeded")
    assert _ids(fleet, ticket="INC-42") == []
    assert a["id"] not in _ids(fleet, actor="admin")
    # Another site and its devices read as unknown, as everywhere else.
    assert "no site 'bj-dc1'" in error(fleet.get("jobs", params={"site": "bj-dc1"}), 404)
    assert "no device 'web01'" in error(fleet.get("jobs", params={"device": "web01"}), 404)
