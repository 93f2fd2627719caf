"""Small typed helpers that build catalogue objects through the API."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi.testclient import TestClient


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def site(client: httpx.Client, slug: str = "bj-dc1", **fields: Any) -> dict[str, Any]:
    body = {"slug": slug, "name": slug.upper(), "kind": "datacenter"} | fields
    return ok(client.post("sites", json=body), 201)  # type: ignore[no-any-return]


def rack(
    client: httpx.Client, name: str = "A01", site: str = "bj-dc1", **fields: Any
) -> dict[str, Any]:
    return ok(client.post("racks", json={"site": site, "name": name} | fields), 201)  # type: ignore[no-any-return]


def device(
    client: httpx.Client, name: str, kind: str = "server", site: str = "bj-dc1", **fields: Any
) -> dict[str, Any]:
    body = {"name": name, "kind": kind, "site": site} | fields
    return ok(client.post("devices", json=body), 201)  # type: ignore[no-any-return]


def path(client: httpx.Client, device: str, **fields: Any) -> dict[str, Any]:
    return ok(client.post(f"devices/{device}/paths", json=fields), 201)  # type: ignore[no-any-return]


def error(response: Any, status: int) -> str:
    """Assert the status and the error shape `{"error", "detail"}`; return the detail."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail"}, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return str(body["detail"])


def poll_power(client: TestClient) -> int:
    """One power poll of every site now, whatever its interval, its reports stored; returns the
    orders sent (the app's own poller, `PowerPoller.poll_once`)."""
    poller = client.app.state.poller  # type: ignore[attr-defined]

    async def once() -> int:
        async with asyncio.timeout(10):
            sent: int = await poller.poll_once()
            return sent

    return client.portal.call(once)  # type: ignore[union-attr]
