"""The audit chain: every change recorded, tampering of any kind detected and named."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from app.config import Settings
from app.db import make_engine
from tests.factories import device, ok, path, rack, site


async def _sql(settings: Settings, statement: str) -> None:
    engine = make_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


def _events(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    return list(ok(client.get("audit", params={"limit": 1000} | params))["items"])


def _history(client: TestClient) -> None:
    site(client, "bj-dc1")
    rack(client, "A01")
    device(client, "web01", rack="A01", position_u=1)
    path(client, "web01", kind="ipmi", address="10.0.0.1", username="u", secret="hunter2-secret")
    headers = {"X-Ticket": "INC-42", "X-Reason": "new PSU"}
    ok(client.patch("devices/web01", json={"vendor": "Dell"}, headers=headers))


def test_changes_are_recorded_with_before_after_ticket_and_actor(client: TestClient) -> None:
    _history(client)
    events = _events(client)
    types = [e["type"] for e in reversed(events)]
    assert types == [
        "user.created",
        "auth.login",
        "site.created",
        "rack.created",
        "device.created",
        "path.created",
        "device.updated",
    ]
    update = events[0]
    assert (update["ticket"], update["reason"], update["actor_name"]) == (
        "INC-42",
        "new PSU",
        "admin",
    )
    assert update["details"] == {"before": {"vendor": ""}, "after": {"vendor": "Dell"}}
    assert (update["target_type"], update["target_name"], update["site"]) == (
        "device",
        "web01",
        "bj-dc1",
    )
    created = next(e for e in events if e["type"] == "path.created")
    assert created["details"]["after"]["secret"] == "set"
    assert "hunter2-secret" not in client.get("audit/export").text
    assert [e["type"] for e in _events(client, ticket="INC-42")] == ["device.updated"]
    assert [e["type"] for e in _events(client, device="web01", type="path.*")] == ["path.created"]
    assert ok(client.get("audit/verify")) == {"ok": True, "checked": 7, "first_bad": None}


def test_export_formats(client: TestClient) -> None:
    _history(client)
    lines = client.get("audit/export", params={"format": "jsonl"}).text.splitlines()
    assert len(lines) == 7
    assert '"type":"user.created"' in lines[0]
    rows = client.get("audit/export", params={"format": "csv"}).text.splitlines()
    assert rows[0].startswith("id,seq,at,type")
    assert len(rows) == 8


def _verify(client: TestClient) -> dict[str, Any]:
    result: dict[str, Any] = ok(client.get("audit/verify"))
    assert result["ok"] is False, result
    return result


def test_a_changed_field_is_named(client: TestClient, settings: Settings) -> None:
    _history(client)
    asyncio.run(_sql(settings, "UPDATE audit_event SET actor_name = 'mallory' WHERE seq = 4"))
    bad = _verify(client)
    assert (bad["checked"], bad["first_bad"]["seq"]) == (3, 4)
    assert "contents do not match" in bad["first_bad"]["reason"]


def test_a_changed_detail_is_named(client: TestClient, settings: Settings) -> None:
    _history(client)
    asyncio.run(_sql(settings, "UPDATE audit_event SET ticket = 'INC-1' WHERE seq = 7"))
    assert _verify(client)["first_bad"]["seq"] == 7


def test_a_deleted_event_is_named(client: TestClient, settings: Settings) -> None:
    _history(client)
    asyncio.run(_sql(settings, "DELETE FROM audit_event WHERE seq = 3"))
    bad = _verify(client)
    assert bad["first_bad"]["seq"] == 4
    assert "expected event #3" in bad["first_bad"]["reason"]


def test_deleting_the_newest_events_is_detected(client: TestClient, settings: Settings) -> None:
    _history(client)
    asyncio.run(_sql(settings, "DELETE FROM audit_event WHERE seq >= 6"))
    bad = _verify(client)
    assert bad["checked"] == 5
    assert "events removed" in bad["first_bad"]["reason"]


def test_an_inserted_event_is_named(client: TestClient, settings: Settings) -> None:
    _history(client)
    asyncio.run(_sql(settings, "UPDATE audit_event SET seq = seq + 1000 WHERE seq > 4"))
    asyncio.run(_sql(settings, "UPDATE audit_event SET seq = seq - 999 WHERE seq > 1000"))
    forged = (
        "INSERT INTO audit_event (seq, at, type, outcome, actor_kind, actor_name, details, "
        "prev_hash, hash) SELECT 5, at, 'device.deleted', outcome, actor_kind, actor_name, "
        "details, hash, hash FROM audit_event WHERE seq = 4"
    )
    asyncio.run(_sql(settings, forged))
    bad = _verify(client)
    assert (bad["checked"], bad["first_bad"]["seq"]) == (4, 5)


def test_renumbering_is_named(client: TestClient, settings: Settings) -> None:
    _history(client)
    asyncio.run(_sql(settings, "UPDATE audit_event SET seq = seq + 100 WHERE seq > 4"))
    assert _verify(client)["first_bad"]["seq"] == 105


def test_nothing_in_the_api_edits_or_deletes_events(client: TestClient) -> None:
    routes = client.get("openapi.json").json()["paths"]
    for route, item in routes.items():
        if route.startswith("/api/v1/audit"):
            assert set(item) == {"get"}, route
