"""The edges of the HTTP surface: limits, unknown routes, malformed requests, ops probes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from app.limits import MAX_JSON_DEPTH, nests_too_deep
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, error, ok, site


def _nested(depth: int) -> Any:
    """`depth` levels of objects and arrays, alternating."""
    value: Any = 1
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


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


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        (json.dumps(_nested(MAX_JSON_DEPTH)), False),
        (json.dumps(_nested(MAX_JSON_DEPTH + 1)), True),
        (json.dumps([_nested(MAX_JSON_DEPTH - 1)] * 50 + [{"x": "]]]]"}]), False),
        (json.dumps({"text": "[" * 100 + '\\"{{{' + "}" * 3}), False),  # brackets in strings
        ("[" * 100_000, True),  # never closed: a parser recurses all the same
        ('"' + "[" * 100_000, False),  # an unterminated string: no nesting in it
        ("[" * 40 + '"\\', True),
        ('"' + '\\"' * 100_000, False),  # no quadratic scan of escapes
    ],
)
def test_nesting_is_measured_without_parsing(text: str, too_deep: bool) -> None:
    assert nests_too_deep(text.encode()) is too_deep


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


NASTY_TEXT = st.text(alphabet='[]{}"\\ab\n', max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.integers() | NASTY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NASTY_TEXT, inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, database=None)
@given(value=JSON_VALUES, limit=st.integers(0, 8), indent=st.sampled_from([None, 1]))
def test_the_measure_agrees_with_a_parser(value: Any, limit: int, indent: int | None) -> None:
    """Strings full of brackets, quotes and backslashes never change the count."""
    text = json.dumps(value, indent=indent).encode()
    assert nests_too_deep(text, limit) is (_depth(value) > limit)


def test_deeply_nested_bodies_are_a_422_naming_the_limit(client: TestClient) -> None:
    site(client)
    limit = f"nests deeper than {MAX_JSON_DEPTH} levels"
    deep = {"name": "web01", "kind": "server", "site": "bj-dc1", "attributes": {"a": _nested(300)}}
    assert limit in error(client.post("devices", json=deep), 422)
    text = "[" * 100_000 + "]" * 100_000  # recursion in Python's parser
    for content_type in ("application/json", "application/merge-patch+json", None):
        headers = {"Content-Type": content_type} if content_type else {}
        assert limit in error(client.post("sites", content=text, headers=headers), 422)
    device(client, "web01", attributes={"a": _nested(MAX_JSON_DEPTH - 3)})
    patch = {"attributes": {"a": _nested(MAX_JSON_DEPTH)}}
    assert limit in error(client.patch("devices/web01", json=patch), 422)
    kept = ok(client.get("devices/web01"))["attributes"]
    assert kept == {"a": _nested(MAX_JSON_DEPTH - 3)}


def _check_against_published(spec: dict[str, Any], route: str, response: httpx.Response) -> None:
    """The answer's body is valid under the schema the OpenAPI document gives its status."""
    documented = spec["paths"][f"/api/v1/{route}"][response.request.method.lower()]["responses"]
    status = str(response.status_code)
    published = documented.get(status) or documented[f"{status[0]}XX"]
    schema = published["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator(schema | {"components": spec["components"]})
    errors = [error.message for error in validator.iter_errors(response.json())]
    assert errors == [], (route, status, response.text)


def test_the_published_error_model_is_the_one_sent(client: TestClient) -> None:
    """FastAPI's default 422 (`detail` a list) is not what Rackhand sends: the document says
    what is sent, for every operation and status."""
    spec = client.get("openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(spec)
    ours = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status in ("422", "4XX", "5XX"):
                assert operation["responses"][status]["content"] == ours, (method, path)
    site(client)
    bad_rows = [{"name": "web01", "kind": "toaster", "site": "bj-dc1"}, {"name": "x y"}]
    answers = [
        ("sites", client.post("sites", json={})),  # FastAPI's own validation
        ("devices", client.get("devices", params={"limit": 0})),
        ("devices/import", client.post("devices/import", json=bad_rows)),  # with the rows
        ("sites", client.post("sites", content="[" * 40 + "]" * 40)),  # the body limit
        ("devices", client.get("devices", params={"cursor": "forged"})),
        ("sites/{site}", client.get("sites/nowhere")),
    ]
    assert [answer.status_code for _, answer in answers] == [422, 422, 422, 422, 400, 404]
    for route, answer in answers:
        _check_against_published(spec, route, answer)


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
