"""`validate_path`: what each driver honours, checked with no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from agents.drivers import console_server, pdu
from agents.drivers.base import OptionError
from agents.drivers.options import OPTIONS, validate_path

KEY = "SHA256:" + "A" * 43


@pytest.mark.parametrize(
    ("kind", "options", "through"),
    [
        ("ipmi", {}, ()),
        ("ipmi", {"cipher_suite": None, "privilege": "administrator"}, ()),
        ("ipmi", {"cipher_suite": 3, "privilege": "user"}, ()),
        ("redfish", {"tls_fingerprint": None}, ()),
        ("redfish", {"tls_fingerprint": ":".join(["AB"] * 32)}, ()),
        ("console_port", {}, ()),
        ("pdu_outlet", {}, ()),
        ("ssh", {"dialect": "shell", "host_key": None}, ()),
        ("libvirt", {}, ()),
        ("ssh", {"hypervisor": "libvirt"}, ("libvirt",)),
        ("ssh", {"hypervisor": "xl", "dialect": "shell", "host_key": KEY}, ("libvirt",)),
        *(
            ("ssh", {"hypervisor": "libvirt", "uri": uri}, ("libvirt",))
            for uri in (
                "qemu:///system",
                "qemu:///session",
                "xen:///system",
                "qemu+ssh://root@10.0.0.7/system",
                "qemu+tcp://hv01.example:16509/system?keyfile=/etc/k",
                "lxc:///",
            )
        ),
        ("ssh", {"hypervisor": "libvirt", "uri": None}, ("libvirt",)),
        ("ssh", {"hypervisor": "libvirt"}, ()),  # unused on a server, but a real hypervisor
        ("ssh", {"dialect": "apc"}, ()),  # unused on a server, but a real dialect
        *(
            ("ssh", {"dialect": name, "host_key": KEY}, ("console_port",))
            for name in console_server.DIALECTS
        ),
        *(("ssh", {"dialect": name}, ("pdu_outlet",)) for name in pdu.DIALECTS),
    ],
)
def test_taken(kind: str, options: dict[str, Any], through: tuple[str, ...]) -> None:
    validate_path(kind, options, through=through)


@pytest.mark.parametrize(
    ("kind", "options", "through", "field", "message"),
    [
        ("libvirt", {"uri": "qemu:///system"}, (), "options.uri", "libvirt paths; they take name"),
        (
            "ssh",
            {},
            ("libvirt",),
            "options.hypervisor",
            "a hypervisor's ssh path must say how its guests are driven: set libvirt or xl",
        ),
        ("ssh", {"dialect": "shell"}, ("libvirt",), "options.hypervisor", "set libvirt or xl"),
        ("ssh", {"hypervisor": "kvm"}, ("libvirt",), "options.hypervisor", "'kvm' is no hyper"),
        ("ssh", {"hypervisor": "kvm"}, (), "options.hypervisor", "use libvirt or xl"),
        (
            "ssh",
            {"hypervisor": "xl", "uri": "xen:///system"},
            ("libvirt",),
            "options.uri",
            "only a libvirt host takes a uri; xl drives its own",
        ),
        (
            "ssh",
            {"hypervisor": "libvirt", "dialect": "opengear"},
            ("libvirt",),
            "options.dialect",
            "a hypervisor host is driven through its shell: use dialect shell",
        ),
        *(
            (
                "ssh",
                {"hypervisor": "libvirt", "uri": uri},
                ("libvirt",),
                "options.uri",
                "must be a libvirt URI such as qemu:///system",
            )
            for uri in (
                "qemu:///sys tem",
                "qemu",
                "/system",
                "qemu:///system\n",
                "qemu:///\x00",
                "QEMU:///system",
                7,
                "",
            )
        ),
        ("ssh", {"uri": "qemu:///system"}, (), "options.hypervisor", "set libvirt or xl"),
        ("telnet", {}, (), "kind", "no driver uses telnet paths; use one of ipmi, redfish"),
        ("ipmi", {"kg": "00"}, (), "options.kg", "they take cipher_suite, privilege"),
        ("pdu_outlet", {"dialect": "apc"}, (), "options.dialect", "they take none"),
        ("ipmi", {"cipher_suite": 9}, (), "options.cipher_suite", "use 3 (SHA-1), 17"),
        ("ipmi", {"privilege": "callback"}, (), "options.privilege", "user, operator, admin"),
        ("redfish", {"tls_fingerprint": "ab" * 35}, (), "options.tls_fingerprint", "64 hex"),
        ("ssh", {"host_key": "MD5:ab"}, (), "options.host_key", "SHA-256 fingerprint"),
        (
            "ssh",
            {"dialect": "shell"},
            ("console_port",),
            "options.dialect",
            "dialect 'shell' cannot open console ports; use one of opengear, avocent_acs, "
            "raritan_sx, menu (docs/dialects.md)",
        ),
        ("ssh", {}, ("console_port",), "options.dialect", "'shell' cannot open console ports"),
        ("ssh", {"dialect": "apc"}, ("console_port",), "options.dialect", "console ports"),
        (
            "ssh",
            {"dialect": "menu"},
            ("pdu_outlet",),
            "options.dialect",
            "dialect 'menu' cannot switch PDU outlets; use one of raritan_px, apc",
        ),
        ("ssh", {"dialect": "cyclades"}, (), "options.dialect", "no driver speaks"),
    ],
)
def test_refused(
    kind: str, options: dict[str, Any], through: tuple[str, ...], field: str, message: str
) -> None:
    with pytest.raises(OptionError) as caught:
        validate_path(kind, options, through=through)
    assert caught.value.field == field
    assert message in caught.value.message


def test_every_kind_with_a_driver_declares_its_options() -> None:
    assert OPTIONS == {
        "ipmi": ("cipher_suite", "privilege"),
        "redfish": ("tls_fingerprint",),
        "console_port": (),
        "pdu_outlet": (),
        "ssh": ("dialect", "host_key", "hypervisor", "uri", "sync_minutes"),
        "libvirt": ("name",),
    }
