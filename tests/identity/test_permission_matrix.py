"""Every route of the OpenAPI table is checked: a new route without a check fails here.

- no credentials → 401 (except the few public routes listed below);
- a viewer on every route that changes something → 403 (except acting on itself);
- an operator scoped to one site, on another site's objects → 403 or 404.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import login
from tests.factories import device, ok, path, rack, site

PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/agents/join"),  # the join token is the credential: tests/fleetlink
    ("GET", "/api/v1/healthz"),
    ("GET", "/api/v1/readyz"),
}
# Mutating routes a viewer may call, on itself only.
SELF_SERVICE = {
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/tokens"),
}
# Another user's object, which a non-admin is answered as missing (docs/security.md).
HIDDEN = {("DELETE", "/api/v1/tokens/{token_id}")}
PARAMS = {"site": "bj-dc1", "rack": "A01", "device": "web01", "user": "bob"}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/sites"): {"slug": "x-new", "name": "X"},
    ("PATCH", "/api/v1/sites/{site}"): {"name": "Renamed"},
    ("POST", "/api/v1/racks"): {"site": "bj-dc1", "name": "A09"},
    ("PATCH", "/api/v1/racks/{rack}"): {"height_u": 40},
    ("POST", "/api/v1/devices"): {"name": "web99", "kind": "server", "site": "bj-dc1"},
    ("PATCH", "/api/v1/devices/{device}"): {"vendor": "Dell"},
    ("POST", "/api/v1/devices/import"): [{"name": "web98", "kind": "server", "site": "bj-dc1"}],
    ("POST", "/api/v1/devices/{device}/paths"): {
        "kind": "ipmi",
        "address": "127.0.0.2",
        "username": "u",
        "secret": "p",
    },
    ("PATCH", "/api/v1/devices/{device}/paths/{path_id}"): {"priority": 3},
    ("POST", "/api/v1/users"): {"username": "eve", "password": "long-enough-pass"},
    ("PATCH", "/api/v1/users/{user}"): {"display_name": "Bob B"},
    ("POST", "/api/v1/tokens"): {"name": "t", "role": "viewer"},
    ("POST", "/api/v1/auth/login"): {"username": "x", "password": "y"},
    ("POST", "/api/v1/auth/token"): {"username": "x", "password": "y"},
    ("POST", "/api/v1/devices/{device}/power"): {"action": "cycle"},
    ("POST", "/api/v1/devices/{device}/boot"): {"device": "bios"},
    ("POST", "/api/v1/power"): {"select": "web01", "action": "cycle"},
    ("POST", "/api/v1/devices/{device}/consoles"): {"via": "auto"},
    ("POST", "/api/v1/webhooks"): {
        "url": "https://tickets.example.com/hooks",
        "secret": "a-secret-of-16-chars",
        "events": ["job.finished"],
        "sites": ["bj-dc1"],
    },
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): {"active": False},
    ("POST", "/api/v1/agents"): {"site": "bj-dc1", "name": "dc1-a"},
}


def _routes(client: TestClient) -> list[tuple[str, str]]:
    spec = client.get("openapi.json").json()
    return sorted(
        (method.upper(), route) for route, item in spec["paths"].items() for method in item
    )


@pytest.fixture
def silent_bmc() -> Iterator[int]:
    """A loopback UDP port that takes packets and never answers: a BMC that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _seed(client: TestClient, bmc_port: int) -> dict[str, str]:
    site(client, "bj-dc1")
    site(client, "sh-br12", kind="branch")
    rack(client, "A01", "bj-dc1")
    device(client, "web01", rack="A01", position_u=1)
    ipmi = path(client, "web01", kind="ipmi", address="127.0.0.1", port=bmc_port, username="u",
                secret="p")  # fmt: skip
    password = "bob-password-123"
    for name, grants in (
        ("bob", [{"role": "viewer"}]),
        ("branch-op", [{"role": "operator", "sites": ["sh-br12"]}]),
    ):
        body = {"username": name, "password": password, "grants": grants}
        ok(client.post("users", json=body), 201)
    token = ok(client.post("tokens", json={"name": "spare", "role": "viewer"}), 201)
    # a job whose BMC never answers: it is still running
    job = ok(client.post("devices/web01/power", json={"action": "on", "wait": 0}), 202)["job"]
    # a webhook (its delivery is refused: loopback) with a delivery: the console below
    hook = {"url": "http://localhost:1/hook", "secret": "a-secret-of-16-chars",
            "events": ["console.closed"]}  # fmt: skip
    webhook = ok(client.post("webhooks", json=hook), 201)["id"]
    # a console that failed at once: its console server (port 1) refuses connections
    device(client, "cs-01", kind="console_server")
    path(client, "cs-01", kind="ssh", address="127.0.0.1", port=1, username="u", secret="p",
         options={"dialect": "opengear"})  # fmt: skip
    device(client, "web02")
    path(client, "web02", kind="console_port", via="cs-01", port=1)
    client.post("devices/web02/consoles", json={"via": "console_port"})
    console = ok(client.get("consoles", params={"device": "web02"}))["items"][0]["id"]
    delivery = ok(client.get(f"webhooks/{webhook}/deliveries"))["items"][0]["id"]
    agent = ok(client.post("agents", json={"site": "sh-br12", "name": "br12-a"}), 201)["id"]
    return {
        "agent_id": str(agent),
        "webhook_id": str(webhook),
        "delivery_id": delivery,
        "console_id": console,
        "path_id": str(ipmi["id"]),
        "token_id": str(token["id"]),
        "job_id": job,
        "password": password,
    }


def _call(
    client: TestClient, method: str, route: str, ids: dict[str, str], token: str | None
) -> int:
    url = route.removeprefix("/api/v1/")
    for name, value in (PARAMS | ids).items():
        url = url.replace("{" + name + "}", value)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers["Content-Type"] = "application/json"
    body = BODIES.get((method, route))
    content = json.dumps(body) if body is not None else None
    saved = client.headers.pop("Authorization", None)
    try:
        status: int = client.request(method, url, content=content, headers=headers).status_code
        return status
    finally:
        if saved is not None:
            client.headers["Authorization"] = saved


def test_every_route_needs_credentials_and_the_right_role(
    client: TestClient, silent_bmc: int
) -> None:
    ids = _seed(client, silent_bmc)
    viewer = login(client, "bob", ids["password"])
    branch = login(client, "branch-op", ids["password"])
    routes = _routes(client)
    assert len(routes) > 25
    failures = []
    for method, route in routes:
        if (method, route) in PUBLIC:
            continue
        status = _call(client, method, route, ids, None)
        if status != 401:
            failures.append(f"{method} {route} without credentials: {status}, wanted 401")
        if method != "GET" and (method, route) not in SELF_SERVICE:
            if (method, route) not in BODIES and "{" not in route and method != "DELETE":
                failures.append(f"{method} {route}: add a sample body to BODIES")
            status = _call(client, method, route, ids, viewer)
            mine = route.endswith("{user}") and method == "PATCH"  # bob may edit his own name
            wanted = 404 if (method, route) in HIDDEN else 403
            if status != wanted and not mine:
                failures.append(f"{method} {route} as a viewer: {status}, wanted 403")
        if "{" in route and route.split("/")[3] in {"sites", "racks", "devices"}:
            status = _call(client, method, route, ids, branch)
            if status not in (403, 404):
                failures.append(f"{method} {route} by another site's operator: {status}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("route", ["devices", "racks", "sites"])
def test_site_scoped_callers_see_only_their_site(
    client: TestClient, route: str, silent_bmc: int
) -> None:
    ids = _seed(client, silent_bmc)
    device(client, "br-srv01", site="sh-br12")
    rack(client, "R1", "sh-br12")
    branch = login(client, "branch-op", ids["password"])
    client.headers["Authorization"] = f"Bearer {branch}"
    listed = ok(client.get(route))
    items = listed["items"] if isinstance(listed, dict) else listed
    assert {item.get("site", item.get("slug")) for item in items} == {"sh-br12"}
