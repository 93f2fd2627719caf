"""Boot settings edited in a libvirt domain definition, and put back after a one-time change
(the libvirt driver's tests check the same against a real libvirt)."""

from __future__ import annotations

import pytest

from agents.drivers import domain_xml
from agents.drivers.domain_xml import DomainXmlError, boot_settings, parse, restore, set_boot
from agents.protocol import BootDevice

ORDERED = """<domain type='kvm'>
  <name>web</name>
  <metadata><app:info xmlns:app="https://example.com/app">kept</app:info></metadata>
  <os><type arch='x86_64'>hvm</type><bootmenu enable='no'/></os>
  <devices>
    <disk type='file' device='disk'><target dev='vda'/><boot order='2'/></disk>
    <disk type='file' device='cdrom'><target dev='sda'/></disk>
    <interface type='user'><boot order='1'/></interface>
  </devices>
</domain>"""


def test_a_device_replaces_per_device_orders_and_comes_back_after() -> None:
    domain = parse(ORDERED)
    before = boot_settings(domain)
    set_boot(domain, BootDevice.CDROM, persistent=False)
    assert boot_settings(domain) == (("boot", "dev=cdrom"),)  # libvirt takes one or the other
    assert domain_xml.pending(domain)
    assert restore(domain)
    assert boot_settings(domain) == before
    assert not domain_xml.pending(domain)
    assert domain.findtext("metadata/{https://example.com/app}info") == "kept"
    assert not restore(domain)  # nothing left to put back


def test_a_second_one_time_change_keeps_the_first_original() -> None:
    domain = parse(ORDERED)
    before = boot_settings(domain)
    set_boot(domain, BootDevice.PXE, persistent=False)
    set_boot(domain, BootDevice.BIOS, persistent=False)
    assert boot_settings(domain) == (
        ("boot", "dev=network"),
        ("bootmenu", "enable=yes", f"timeout={domain_xml.MENU_TIMEOUT_MS}"),
    )
    set_boot(domain, BootDevice.DEFAULT, persistent=False)
    assert boot_settings(domain) == before


def test_a_persistent_change_forgets_the_original() -> None:
    domain = parse(ORDERED)
    set_boot(domain, BootDevice.PXE, persistent=False)
    set_boot(domain, BootDevice.DISK, persistent=True)
    assert not domain_xml.pending(domain)
    assert boot_settings(domain) == (("boot", "dev=hd"),)
    assert domain.find("metadata") is not None  # another application's metadata stays


def test_the_definition_survives_a_round_trip() -> None:
    domain = parse(ORDERED)
    set_boot(domain, BootDevice.PXE, persistent=False)
    again = parse(domain_xml.serialize(domain))
    assert domain_xml.pending(again)
    assert restore(again)
    assert boot_settings(again) == boot_settings(parse(ORDERED))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not xml", "not XML we read"),
        ("<domain><name>x</name></domain>", "no <domain><os>"),
        (
            '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><domain><os/>&a;</domain>',
            "not XML we read",
        ),
        (
            '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><domain><os>&x;</os></domain>',
            "not XML we read",
        ),
    ],
)
def test_what_is_not_a_domain_is_refused(text: str, message: str) -> None:
    with pytest.raises(DomainXmlError, match=message):
        parse(text)
