"""Device secrets never leave the vault: not in responses, not in errors, not in log lines."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from tests.factories import device, ok, path, site

SECRET = "Zq9-very-secret-BMC-password"


def test_secrets_never_reach_logs_or_responses(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    site(client)
    device(client, "web01")
    device(client, "cs-01", kind="console_server")
    responses = [
        client.post(
            "devices/web01/paths",
            json={"kind": "ipmi", "address": "10.0.0.1", "username": "admin", "secret": SECRET},
        ),
        client.post(
            "devices/web01/paths",
            json={"kind": "ipmi", "address": "bad!", "username": "a", "secret": SECRET},
        ),
        client.post(
            "devices/web01/paths",
            json={
                "kind": "ipmi",
                "address": "10.0.0.2",
                "username": "a",
                "secret": SECRET,
                "options": {"x": 1},
            },
        ),
        client.post(
            "devices/cs-01/paths",
            json={
                "kind": "ssh",
                "address": "10.0.0.3",
                "username": "a",
                "secret": SECRET,
                "options": {"dialect": "opengear"},
            },
        ),
        client.post(
            "devices/import",
            content=json.dumps(
                [
                    {
                        "name": "web02",
                        "kind": "server",
                        "site": "bj-dc1",
                        "paths": [
                            {
                                "kind": "redfish",
                                "address": "https://10.0.0.4",
                                "username": "a",
                                "secret": SECRET,
                            }
                        ],
                    }
                ]
            ),
        ),
        client.post(
            "devices/import",
            params={"dry_run": True},
            content=json.dumps(
                [
                    {
                        "name": "web03",
                        "kind": "server",
                        "site": "nowhere",
                        "paths": [
                            {
                                "kind": "ipmi",
                                "address": "10.0.0.5",
                                "username": "a",
                                "secret": SECRET,
                            }
                        ],
                    }
                ]
            ),
        ),
        client.get("devices/web01"),
        client.get("devices/web02/paths"),
        client.get("devices/export", params={"format": "json"}),
        client.get("devices/export", params={"format": "csv"}),
    ]
    assert [r.status_code for r in responses[:6]] == [201, 422, 422, 201, 200, 422]
    for response in responses:
        assert SECRET not in response.text
    ipmi = ok(client.get("devices/web01/paths"))[0]
    client.patch(f"devices/web01/paths/{ipmi['id']}", json={"secret": SECRET + "2", "port": 0})
    path(client, "web01", kind="ipmi", address="10.0.0.9", username="a", secret=SECRET + "3")
    password = "a-user-password-123"
    ok(client.post("users", json={"username": "carol", "password": password}), 201)
    token = ok(client.post("tokens", json={"name": "ci", "role": "viewer"}), 201)["token"]
    client.get("sites", headers={"Authorization": f"Bearer {token}"})
    client.post("auth/login", json={"username": "carol", "password": password + "x"})
    assert password not in client.get("audit/export").text
    assert token not in client.get("audit/export").text
    assert caplog.records, "the test must capture the service's logging"
    for record in caplog.records:
        for secret in (SECRET, password, token):
            assert secret not in record.getMessage()
            assert secret not in str(record.args)
        assert SECRET not in record.getMessage()
        assert SECRET not in str(record.args)
        assert SECRET not in (record.exc_text or "")
