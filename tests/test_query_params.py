"""Every route refuses a query parameter it does not declare (400), and takes those it does."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from tests.factories import error, ok

UNKNOWN = "no_such_parameter"


def _routes(client: TestClient) -> list[tuple[str, str, list[str]]]:
    """(method, URL, declared query parameters) of every route of the OpenAPI table."""
    spec = client.get("openapi.json").json()
    found = []
    for route, item in spec["paths"].items():
        for method, operation in item.items():
            url = route.removeprefix("/api/v1/")
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    url = url.replace("{" + parameter["name"] + "}", "1")
            declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            found.append((method.upper(), url, declared))
    return sorted(found)


def test_every_route_refuses_an_unknown_query_parameter(anonymous: TestClient) -> None:
    routes = _routes(anonymous)
    assert len(routes) > 25
    failures = []
    for method, url, declared in routes:
        response = anonymous.request(method, url, params={UNKNOWN: "x"})
        body: dict[str, Any] = response.json()
        if response.status_code != 400 or body.get("error") != "InvalidInput":
            failures.append(f"{method} {url}: {response.status_code} {body}")
        elif f"unknown query parameter '{UNKNOWN}'" not in body["detail"]:
            failures.append(f"{method} {url}: the detail does not name it: {body['detail']}")
        elif not all(name in body["detail"] for name in declared):
            failures.append(f"{method} {url}: the detail leaves out some of {declared}")
        # What the route declares passes the check (and fails later, here for credentials).
        if declared:
            response = anonymous.request(method, url, params=dict.fromkeys(declared, "x"))
            if response.status_code == 400:
                failures.append(f"{method} {url}: a declared parameter refused: {response.text}")
    assert not failures, "\n".join(failures)


def test_the_refusal_comes_first_and_names_every_unknown(client: TestClient) -> None:
    detail = error(client.get("devices", params={"site": "nowhere", "sitte": "x", "z": "1"}), 400)
    assert detail.startswith("unknown query parameters 'sitte', 'z' (did you mean 'site'?); ")
    assert "this endpoint takes no query parameters" in error(
        client.get("healthz", params={"verbose": "1"}), 400
    )
    assert ok(client.get("devices", params={"tag": ["a", "b"], "limit": 5}))["items"] == []


@pytest.mark.parametrize("query", ["mode=ro&bogus=1", "tail=100"])
def test_the_console_websocket_refuses_unknown_parameters(client: TestClient, query: str) -> None:
    with pytest.raises(WebSocketDenialResponse) as refused:
        client.websocket_connect(f"/api/v1/consoles/abc/stream?{query}").__enter__()
    assert refused.value.status_code == 400
    body = refused.value.json()
    assert body["error"] == "InvalidInput"
    assert "this endpoint takes: mode" in body["detail"]


def test_the_console_websocket_takes_mode(client: TestClient) -> None:
    with client.websocket_connect("/api/v1/consoles/abc/stream?mode=ro") as websocket:
        answer = websocket.receive_json()
    assert (answer["error"], answer["detail"]) == ("NotFound", "no open console session 'abc'")
