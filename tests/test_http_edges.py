"""The edges of the HTTP surface: limits, unknown routes, malformed requests, ops probes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import error, ok, site


def test_error_shape_for_unknown_routes_and_methods(client: TestClient) -> None:
    assert error(client.get("nothing-here"), 404)
    assert client.get("nothing-here").json()["error"] == "NotFound"
    assert client.put("sites").json()["error"] == "MethodNotAllowed"


def test_malformed_json_is_a_422(client: TestClient) -> None:
    response = client.post(
        "sites", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert "JSON" in error(response, 422)


def test_oversized_bodies_are_refused_before_reading(client: TestClient) -> None:
    big = b'{"slug": "x", "name": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    response = client.post("sites", content=big, headers={"Content-Type": "application/json"})
    assert "over 1048576 bytes" in error(response, 413)
    assert ok(client.get("sites")) == []


def test_oversized_streamed_bodies_are_cut_off(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"slug": "x", "name": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    response = client.post("sites", content=chunks(), headers={"Content-Type": "application/json"})
    assert "over 1048576 bytes" in error(response, 413)


def test_imports_get_a_larger_limit(client: TestClient) -> None:
    site(client)
    rows = ",".join(
        f'{{"name": "n{i:05d}", "kind": "server", "site": "bj-dc1", "description": "{"d" * 200}"}}'
        for i in range(6000)
    )
    body = f"[{rows}]".encode()
    assert len(body) > 1024 * 1024
    assert (
        ok(client.post("devices/import", content=body, params={"dry_run": True}))["created"] == 6000
    )


def test_nul_in_url_or_body_is_refused(client: TestClient) -> None:
    assert "NUL" in error(client.get("sites/a%00b"), 422)
    assert "NUL" in error(client.get("devices", params={"q": "a\x00b"}), 422)
    assert "NUL" in error(client.post("sites", json={"slug": "x", "name": "a\x00"}), 422)


def test_probes(client: TestClient) -> None:
    assert ok(client.get("healthz")) == {"status": "ok"}
    assert ok(client.get("readyz")) == {"status": "ready"}
    assert client.get("openapi.json").json()["info"]["title"] == "Rackhand"


class _Upload:
    """50 MiB offered in 64 KiB chunks, counting what the server actually took."""

    def __init__(self) -> None:
        self.taken = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(800):
            self.taken += 65536
            yield b" " * 65536


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "credential",
    [{}, {"Authorization": "Bearer rh_bogus"}, {"Cookie": "rackhand_session=bogus"}],
    ids=["anonymous", "bogus-token", "bogus-session"],
)
def test_a_large_body_is_read_only_from_a_caller_who_is_logged_in(
    anonymous: TestClient, declared: bool, credential: dict[str, str]
) -> None:
    """The attack: anyone's import body was read, up to 64 MiB, before anyone asked who."""
    upload = _Upload()
    headers = {"Content-Type": "application/json"} | credential
    if declared:
        headers["Content-Length"] = str(800 * 65536)
    response = anonymous.post("devices/import", content=upload, headers=headers)
    assert "read only from a caller who is logged in" in error(response, 401)
    assert upload.taken <= 65536  # refused before the body was read


def test_a_dashboard_session_imports_a_large_body_with_its_csrf_token(
    anonymous: TestClient,
) -> None:
    site(_as_admin(anonymous))
    anonymous.headers.pop("Authorization")
    logged_in = anonymous.post("auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    csrf = {"X-CSRF-Token": ok(logged_in)["csrf_token"]}
    row = {"kind": "server", "site": "bj-dc1", "description": "d" * 200}
    body = json.dumps([row | {"name": f"n{i:05d}"} for i in range(6000)]).encode()
    assert len(body) > 1024 * 1024
    dry_run = anonymous.post("devices/import", content=body, params={"dry_run": 1}, headers=csrf)
    assert ok(dry_run)["created"] == 6000
    assert "X-CSRF-Token" in error(anonymous.post("devices/import", content=body), 403)


def _as_admin(client: TestClient) -> TestClient:
    client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
    return client
