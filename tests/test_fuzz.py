"""Schema-driven fuzzing: no input to any operation of the API may produce a 5xx."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from agents.drivers.fake import FakeDriver
from app.config import Settings
from app.limits import MAX_JSON_DEPTH
from app.main import create_app
from tests.factories import ok, path, rack, site

CATALOGUE = [
    {"name": "web01", "kind": "server", "site": "bj-dc1", "rack": "A01", "position_u": 1},
    {"name": "cs-01", "kind": "console_server", "site": "bj-dc1"},
    {"name": "pdu-a1", "kind": "pdu", "site": "bj-dc1"},
    {"name": "hv01", "kind": "hypervisor", "site": "bj-dc1"},
    {"name": "vm1", "kind": "vm", "site": "bj-dc1", "parent": "hv01"},
]

EXAMPLES = int(os.environ.get("RACKHAND_FUZZ_EXAMPLES", "20"))
# The OpenAPI document does not need a database: build it once from an app never started.
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(database_url="sqlite://")).openapi())
OPERATIONS = {
    f"{op.method.upper()} {op.path}": op
    for op in (result.ok() for result in SCHEMA.get_all_operations())  # type: ignore[union-attr]
}
# Operations whose every input is a free string have no invalid input to generate.
CONSTRAINED = sorted(name for name, op in OPERATIONS.items() if op.body or op.query)
CASES = [(name, GenerationMode.POSITIVE) for name in sorted(OPERATIONS)] + [
    (name, GenerationMode.NEGATIVE) for name in CONSTRAINED
]


@pytest.fixture
def anonymous(settings: Settings) -> Iterator[TestClient]:
    """The app with the fake driver as its only driver: a fuzzed power action or console reaches
    the fake (or "no driver for this path kind"), never a packet to a seeded or generated
    address, and never a device's own failure (a 502) that is no bug of the server's."""
    fake = FakeDriver()
    app = create_app(settings, drivers={"ipmi": fake, "console_port": fake})
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.base_url = test_client.base_url.join("/api/v1/")
        yield test_client


def _seed(client: TestClient) -> None:
    site(client, "bj-dc1")
    rack(client, "A01")
    ok(client.post("devices/import", content=json.dumps(CATALOGUE)))
    path(client, "web01", kind="ipmi", address="10.0.0.1", username="admin", secret="pw")


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_no_input_gives_a_server_error(
    client: TestClient, operation: str, mode: GenerationMode
) -> None:
    _seed(client)
    strategy = OPERATIONS[operation].as_strategy(generation_mode=mode)

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        case = data.draw(strategy)
        kwargs: dict[str, Any] = case.as_transport_kwargs(base_url="http://testserver")
        kwargs.pop("cookies", None)
        if isinstance(kwargs.get("data"), str | bytes):
            kwargs["content"] = kwargs.pop("data")
        response = client.request(**kwargs)
        assert response.status_code < 500, (kwargs, response.text)
        if response.status_code >= 400:
            assert set(response.json()) >= {"error", "detail"}, response.text

    try:
        check()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, "valid inputs must always exist"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSORS = st.one_of(
    JSON_VALUES.map(lambda key: _b64(json.dumps(key).encode())),
    st.lists(JSON_VALUES, min_size=1, max_size=3).map(lambda key: _b64(json.dumps(key).encode())),
    st.binary(max_size=64).map(_b64),
    st.text(max_size=64),
)


def test_no_cursor_gives_a_server_error(client: TestClient) -> None:
    """A cursor is the caller's to send back: whatever it holds, a page or a 4xx."""
    _seed(client)

    @settings(max_examples=EXAMPLES * 5, deadline=None, database=None)
    @given(cursor=CURSORS, listing=st.sampled_from(["devices", "jobs", "audit"]))
    def check(cursor: str, listing: str) -> None:
        response = client.get(listing, params={"cursor": cursor})
        assert response.status_code in (200, 400, 422), (listing, cursor, response.text)

    check()


def test_no_nesting_gives_a_server_error(client: TestClient) -> None:
    """Any depth of objects and arrays in a body: stored up to the limit, a 422 past it."""
    _seed(client)

    @settings(max_examples=EXAMPLES * 2, deadline=None, database=None)
    @given(depth=st.integers(0, 3000), leaf=JSON_VALUES, arrays=st.booleans())
    def check(depth: int, leaf: Any, arrays: bool) -> None:
        opening, closing = ("[", "]") if arrays else ('{"k":', "}")
        deep = opening * depth + json.dumps(leaf) + closing * depth
        body = '{"attributes": {"a": ' + deep + "}}"
        response = client.patch("devices/web01", content=body)
        assert response.status_code in (200, 422), response.text
        if depth + 2 > MAX_JSON_DEPTH:
            assert "nests deeper than" in response.json()["detail"]

    check()
