"""Schema-driven fuzzing: no input to any operation of the API may produce a 5xx."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from app.config import Settings
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
