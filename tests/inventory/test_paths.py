from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.db import make_engine
from app.inventory.models import ControlPath
from app.vault import load_vault
from tests.factories import device, error, ok, path, site

BMC_PASSWORD = "s3cret-Bmc-pa55"

UUID = "5b1c9a1e-1b3f-4c1e-9a55-0a0b0c0d0e0f"


def _fleet(client: TestClient) -> None:
    site(client, "bj-dc1")
    site(client, "sh-br12", kind="branch")
    device(client, "web01")
    device(client, "web02")
    device(client, "cs-01", kind="console_server")
    device(client, "pdu-a1", kind="pdu")
    device(client, "hv01", kind="hypervisor")
    device(client, "hv02", kind="hypervisor")
    device(client, "vm1", kind="vm", parent="hv01")
    device(client, "cs-far", kind="console_server", site="sh-br12")


async def _stored(settings: Settings) -> list[bytes | None]:
    engine = make_engine(settings.database_url)
    async with engine.connect() as connection:
        rows = await connection.scalars(select(ControlPath.secret_ciphertext))
        found = list(rows)
    await engine.dispose()
    return found


def test_every_kind_of_path(client: TestClient) -> None:
    _fleet(client)
    ipmi = path(
        client,
        "web01",
        kind="ipmi",
        address="10.1.0.11",
        username="admin",
        secret=BMC_PASSWORD,
        options={"cipher_suite": 3},
    )
    assert (ipmi["port"], ipmi["priority"], ipmi["secret"]) == (623, 10, "set")
    path(
        client,
        "web01",
        kind="redfish",
        address="https://10.1.0.11:8443/redfish/v1",
        username="admin",
        secret=BMC_PASSWORD,
    )
    path(client, "web01", kind="console_port", via="cs-01", port=3)
    path(client, "web01", kind="pdu_outlet", via="pdu-a1", outlets=[5, 6])
    path(
        client,
        "cs-01",
        kind="ssh",
        address="cs-01.mgmt.example",
        username="admin",
        secret="pw",
        options={"dialect": "opengear"},
    )
    shown = ok(client.get("devices/web01"))["paths"]
    assert [p["kind"] for p in shown] == ["ipmi", "redfish", "console_port", "pdu_outlet"]
    assert ok(client.get("devices/web01/paths")) == shown


def test_secrets_are_write_only_and_encrypted_at_rest(
    client: TestClient, settings: Settings
) -> None:
    _fleet(client)
    created = path(
        client, "web01", kind="ipmi", address="10.1.0.11", username="admin", secret=BMC_PASSWORD
    )
    for response in (
        client.get("devices/web01"),
        client.get("devices/web01/paths"),
        client.get("devices/export", params={"format": "json"}),
        client.patch(f"devices/web01/paths/{created['id']}", json={"priority": 5}),
    ):
        assert BMC_PASSWORD not in response.text
    (ciphertext,) = asyncio.run(_stored(settings))
    assert ciphertext is not None
    assert BMC_PASSWORD.encode() not in ciphertext
    assert load_vault(settings).decrypt(ciphertext) == BMC_PASSWORD
    cleared = ok(client.patch(f"devices/web01/paths/{created['id']}", json={"secret": None}))
    assert cleared["secret"] is None
    assert asyncio.run(_stored(settings)) == [None]


def test_secret_never_echoed_in_errors(client: TestClient) -> None:
    _fleet(client)
    response = client.post(
        "devices/web01/paths",
        json={
            "kind": "ipmi",
            "address": "not an address!",
            "username": "admin",
            "secret": BMC_PASSWORD,
        },
    )
    assert "address" in error(response, 422)
    assert BMC_PASSWORD not in response.text
    long_secret = "x" * 20000
    response = client.post(
        "devices/web01/paths",
        json={"kind": "ipmi", "address": "10.0.0.1", "username": "admin", "secret": long_secret},
    )
    assert "secret" in error(response, 422)
    assert long_secret not in response.text


def test_paths_must_fit_the_devices(client: TestClient) -> None:
    _fleet(client)
    cases = [
        (
            {"kind": "console_port", "via": "pdu-a1", "port": 1},
            "'pdu-a1' is a pdu; a console_port path needs a console_server or kvm_switch",
        ),
        ({"kind": "pdu_outlet", "via": "cs-01", "outlets": [1]}, "needs a pdu"),
        ({"kind": "console_port", "via": "cs-far", "port": 1}, "at another site"),
        ({"kind": "console_port", "via": "nowhere", "port": 1}, "via: no device 'nowhere'"),
        ({"kind": "libvirt", "via": "hv01", "domain": UUID}, "libvirt path is for vms"),
        ({"kind": "pdu_outlet", "via": "pdu-a1", "outlets": [1, 1]}, "outlet twice"),
        (
            {
                "kind": "ipmi",
                "address": "10.0.0.1",
                "username": "u",
                "options": {"cipher_suite": 9},
            },
            "cipher_suite",
        ),
        ({"kind": "telnet", "address": "10.0.0.1"}, "kind"),
    ]
    for body, message in cases:
        assert message in error(client.post("devices/web01/paths", json=body), 422), body
    assert "a vm has no ipmi" in error(
        client.post(
            "devices/vm1/paths", json={"kind": "ipmi", "address": "10.0.0.1", "username": "u"}
        ),
        422,
    )
    assert "through its parent" in error(
        client.post("devices/vm1/paths", json={"kind": "libvirt", "via": "hv02", "domain": UUID}),
        422,
    )
    assert "through itself" in error(
        client.post(
            "devices/cs-01/paths", json={"kind": "console_port", "via": "cs-01", "port": 1}
        ),
        422,
    )


def test_console_port_is_wired_once(client: TestClient) -> None:
    _fleet(client)
    path(client, "web01", kind="console_port", via="cs-01", port=3)
    assert "already wired to 'web01'" in error(
        client.post(
            "devices/web02/paths", json={"kind": "console_port", "via": "cs-01", "port": 3}
        ),
        409,
    )
    moved = path(client, "web02", kind="console_port", via="cs-01", port=4)
    assert "already wired" in error(
        client.patch(f"devices/web02/paths/{moved['id']}", json={"port": 3}), 409
    )


def test_update_merges_and_revalidates(client: TestClient) -> None:
    _fleet(client)
    created = path(
        client, "web01", kind="ipmi", address="10.1.0.11", username="admin", secret=BMC_PASSWORD
    )
    updated = ok(
        client.patch(
            f"devices/web01/paths/{created['id']}", json={"address": "10.1.0.12", "priority": 5}
        )
    )
    assert (updated["address"], updated["priority"], updated["username"]) == (
        "10.1.0.12",
        5,
        "admin",
    )
    assert (updated["secret"], updated["secret_change"]) == (None, "dropped")  # re-pointed
    assert "does not apply to ipmi paths" in error(
        client.patch(f"devices/web01/paths/{created['id']}", json={"outlets": [1]}), 422
    )
    assert "address" in error(
        client.patch(f"devices/web01/paths/{created['id']}", json={"address": "bad host!"}), 422
    )
    error(client.patch("devices/web02/paths/999", json={"priority": 1}), 404)
    error(client.patch(f"devices/web02/paths/{created['id']}", json={"priority": 1}), 404)
    ok(client.delete(f"devices/web01/paths/{created['id']}"), 204)
    assert ok(client.get("devices/web01/paths")) == []


def test_devices_in_use_as_paths_are_protected(client: TestClient) -> None:
    _fleet(client)
    path(client, "web01", kind="console_port", via="cs-01", port=3)
    assert "control path of web01" in error(client.delete("devices/cs-01"), 409)
    assert "'web01' is reached through this device" in error(
        client.patch("devices/cs-01", json={"kind": "server"}), 422
    )
    assert "another site" in error(client.patch("devices/web01", json={"site": "sh-br12"}), 422)
    assert ok(client.get("devices/cs-01"))["kind"] == "console_server"
    ok(client.delete("devices/web01"), 204)  # its own paths go with it
    ok(client.delete("devices/cs-01"), 204)


def test_a_redfish_url_carries_no_query_to_show(client: TestClient) -> None:
    """The URL is shown in answers, the audit and task messages; credentials go in the secret."""
    _fleet(client)
    for address in ("https://10.1.0.11/redfish?token=t0k3n", "https://10.1.0.11/r#t0k3n"):
        body = {"kind": "redfish", "address": address, "username": "u", "secret": "s"}
        response = client.post("devices/web01/paths", json=body)
        assert "must not carry a ?query or #fragment" in error(response, 422)
        assert "t0k3n" not in response.text
    for address in ("https://u:t0k3n@10.1.0.11/redfish", "https://t0k3n@10.1.0.11"):
        body = {"kind": "redfish", "address": address, "username": "u", "secret": "s"}
        response = client.post("devices/web01/paths", json=body)
        assert "address" in error(response, 422)
        assert "t0k3n" not in response.text
