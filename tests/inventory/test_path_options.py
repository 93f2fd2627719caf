"""Paths no driver could use are refused when written (create, update, import), not at their
first console or power action, and a refusal changes nothing stored."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.drivers.options import OPTIONS
from app.inventory.schemas import PATH_MODELS
from tests.factories import device, error, ok, path, site

KEY = "SHA256:" + "A" * 43
IPMI = {"kind": "ipmi", "address": "10.1.0.11", "username": "admin", "secret": "pw"}
REDFISH = {"kind": "redfish", "address": "10.1.0.12", "username": "admin", "secret": "pw"}


def _ssh(**options: Any) -> dict[str, Any]:
    return {"kind": "ssh", "address": "10.0.0.5", "username": "admin", "options": options}


def _fleet(client: TestClient) -> None:
    site(client, "bj-dc1")
    device(client, "web01")
    device(client, "cs-01", kind="console_server")
    device(client, "kvm-01", kind="kvm_switch")
    device(client, "pdu-a1", kind="pdu")
    device(client, "hv01", kind="hypervisor")
    device(client, "vm1", kind="vm", parent="hv01")


REFUSED = [
    (
        "cs-01",
        _ssh(),
        "options.dialect: 'cs-01' is a console_server: dialect 'shell' cannot open console "
        "ports; use one of opengear, avocent_acs, raritan_sx, menu (docs/dialects.md)",
    ),
    ("kvm-01", _ssh(dialect="apc"), "dialect 'apc' cannot open console ports"),
    ("cs-01", _ssh(dialect="cyclades"), "dialect 'cyclades' cannot open console ports"),
    (
        "pdu-a1",
        _ssh(dialect="opengear"),
        "options.dialect: 'pdu-a1' is a pdu: dialect 'opengear' cannot switch PDU outlets; use "
        "one of raritan_px, apc (docs/dialects.md)",
    ),
    ("pdu-a1", _ssh(), "dialect 'shell' cannot switch PDU outlets"),
    ("web01", _ssh(dialect="opengear_ngcs"), "no driver speaks dialect 'opengear_ngcs'"),
    (
        "hv01",
        _ssh(),
        "options.hypervisor: 'hv01' is a hypervisor: a hypervisor's ssh path must say how its "
        "guests are driven: set libvirt or xl (docs/hypervisors.md)",
    ),
    ("hv01", _ssh(hypervisor="kvm"), "options.hypervisor: "),  # the schema's or the driver's
    ("hv01", _ssh(hypervisor="xl", uri="xen:///system"), "only a libvirt host takes a uri"),
    ("hv01", _ssh(hypervisor="libvirt", uri="qemu:// system"), "must be a libvirt URI"),
    ("hv01", _ssh(hypervisor="libvirt", dialect="opengear"), "driven through its shell"),
    (
        "vm1",
        {
            "kind": "libvirt",
            "via": "hv01",
            "domain": "5b1c9a1e-1b3f-4c1e-9a55-0a0b0c0d0e0f",
            "options": {"uri": "qemu:///system"},
        },
        "unknown option 'uri'; this kind of path takes name",
    ),
    (
        "web01",
        IPMI | {"options": {"privilege": "administrator", "kg": "00"}},
        "unknown option 'kg'; this kind of path takes cipher_suite, privilege",
    ),
    ("web01", REDFISH | {"options": {"verify": False}}, "takes tls_fingerprint"),
    (
        "web01",
        {"kind": "console_port", "via": "cs-01", "port": 1, "options": {"dialect": "opengear"}},
        "unknown option 'dialect'; this kind of path takes none",
    ),
    (
        "web01",
        REDFISH | {"options": {"tls_fingerprint": "ab" * 40}},
        "options.tls_fingerprint: must be the certificate's SHA-256: 64 hex digits",
    ),
]


@pytest.mark.parametrize(("name", "body", "message"), REFUSED)
def test_refused_at_create(
    client: TestClient, name: str, body: dict[str, Any], message: str
) -> None:
    _fleet(client)
    assert message in error(client.post(f"devices/{name}/paths", json=body), 422)
    assert ok(client.get(f"devices/{name}/paths")) == []


@pytest.mark.parametrize(
    ("name", "created", "patch", "message"),
    [
        ("cs-01", _ssh(dialect="opengear"), {"options": {}}, "dialect 'shell' cannot open"),
        ("cs-01", _ssh(dialect="menu"), {"options": {"dialect": "raritan_px"}}, "console ports"),
        ("pdu-a1", _ssh(dialect="apc"), {"options": {"dialect": "menu"}}, "PDU outlets"),
        ("hv01", _ssh(hypervisor="libvirt"), {"options": {}}, "set libvirt or xl"),
        ("web01", IPMI, {"options": {"privilege": "root"}}, "privilege"),
        ("web01", IPMI, {"options": {"cipher": 17}}, "unknown option 'cipher'"),
        ("web01", REDFISH, {"options": {"tls_fingerprint": "0" * 70}}, "64 hex digits"),
    ],
)
def test_refused_at_update_changes_nothing(
    client: TestClient, name: str, created: dict[str, Any], patch: dict[str, Any], message: str
) -> None:
    _fleet(client)
    stored = path(client, name, **created | {"secret": "pw"})
    url = f"devices/{name}/paths/{stored['id']}"
    assert message in error(client.patch(url, json=patch | {"priority": 1}), 422)
    assert ok(client.get(f"devices/{name}/paths")) == [stored]


def test_what_the_drivers_use_is_taken(client: TestClient) -> None:
    _fleet(client)
    path(client, "cs-01", **_ssh(dialect="opengear", host_key=KEY))
    path(client, "kvm-01", **_ssh(dialect="raritan_sx"))
    path(client, "pdu-a1", **_ssh(dialect="raritan_px"))
    path(client, "hv01", **_ssh(hypervisor="libvirt", uri="qemu+ssh://root@hv01/system"))
    path(client, "hv01", **_ssh(hypervisor="xl", host_key=KEY))
    path(client, "vm1", kind="libvirt", via="hv01", domain="0e3a2c1b-5d4f-4a6b-9c8d-7e6f5a4b3c2d")
    path(client, "web01", **_ssh(dialect="menu"))  # unused, but a dialect a driver speaks
    path(client, "web01", **IPMI | {"options": {"cipher_suite": 17, "privilege": "operator"}})
    path(client, "web01", **REDFISH | {"options": {"tls_fingerprint": ":".join(["ab"] * 32)}})
    path(client, "web01", kind="console_port", via="cs-01", port=2)
    path(client, "web01", kind="pdu_outlet", via="pdu-a1", outlets=[3])


def test_a_new_kind_must_suit_the_ssh_path(client: TestClient) -> None:
    """A device that changes kind keeps only ssh paths the drivers of its new kind can use."""
    _fleet(client)
    path(client, "cs-01", **_ssh(dialect="opengear"))
    assert (
        "kind: its ssh path would not work: 'cs-01' is a pdu: dialect 'opengear' cannot switch "
        "PDU outlets" in error(client.patch("devices/cs-01", json={"kind": "pdu"}), 422)
    )
    assert ok(client.get("devices/cs-01"))["kind"] == "console_server"
    assert ok(client.patch("devices/cs-01", json={"kind": "kvm_switch"}))["kind"] == "kvm_switch"
    path(client, "web01", **_ssh(dialect="apc"))
    assert ok(client.patch("devices/web01", json={"kind": "pdu"}))["kind"] == "pdu"


def test_import_refuses_what_no_driver_uses(client: TestClient) -> None:
    _fleet(client)
    rows = [
        {"name": "cs-01", "kind": "console_server", "site": "bj-dc1", "paths": [_ssh()]},
        {"name": "hv02", "kind": "hypervisor", "site": "bj-dc1", "paths": [_ssh()]},
    ]
    response = client.post("devices/import", json=rows)
    found = {(item["row"], item["field"]) for item in response.json()["errors"]}
    assert response.status_code == 422
    assert found == {(1, "paths.0.options.dialect"), (2, "paths.0.options.hypervisor")}
    assert ok(client.get("devices/cs-01/paths")) == []


def test_the_schemas_take_the_options_the_drivers_honour() -> None:
    for kind, model in PATH_MODELS.items():
        taken = tuple(model.model_fields["options"].annotation.model_fields)  # type: ignore[union-attr]
        assert taken == OPTIONS.get(kind, ()), kind
