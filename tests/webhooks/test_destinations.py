"""The rule of where webhooks may go, address by address (no database, no network)."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address, ip_network

import pytest

from app.webhooks.destinations import Destinations, Rule, literal, system_resolver

NONE_ALLOWED = Destinations()


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", Rule.LOOPBACK),
        ("127.255.0.9", Rule.LOOPBACK),
        ("::1", Rule.LOOPBACK),
        ("10.0.0.5", Rule.PRIVATE),
        ("172.16.4.4", Rule.PRIVATE),
        ("192.168.1.1", Rule.PRIVATE),
        ("fec0::1", Rule.PRIVATE),
        ("64:ff9b:1::a00:5", Rule.PRIVATE),
        ("169.254.1.1", Rule.LINK_LOCAL),
        ("fe80::1", Rule.LINK_LOCAL),
        ("fe80::1%eth0", Rule.LINK_LOCAL),
        ("fc00::1", Rule.UNIQUE_LOCAL),
        ("fd12:3456::1", Rule.UNIQUE_LOCAL),
        ("100.64.0.1", Rule.SHARED),
        ("100.127.255.254", Rule.SHARED),
        ("169.254.169.254", Rule.METADATA),
        ("169.254.170.2", Rule.METADATA),
        ("100.100.100.200", Rule.METADATA),
        ("168.63.129.16", Rule.METADATA),
        ("fd00:ec2::254", Rule.METADATA),
        ("0.0.0.0", Rule.UNSPECIFIED),
        ("::", Rule.UNSPECIFIED),
        ("224.0.0.1", Rule.MULTICAST),
        ("239.255.255.250", Rule.MULTICAST),
        ("ff02::1", Rule.MULTICAST),
        ("0.1.2.3", Rule.RESERVED),
        ("192.0.0.8", Rule.RESERVED),
        ("192.0.2.10", Rule.RESERVED),
        ("198.18.0.1", Rule.RESERVED),
        ("240.0.0.1", Rule.RESERVED),
        ("255.255.255.255", Rule.RESERVED),
        ("2001:db8::1", Rule.RESERVED),
        ("2001::1", Rule.RESERVED),  # Teredo
        ("::7f00:1", Rule.RESERVED),  # IPv4-compatible (deprecated)
        ("100::1", Rule.RESERVED),
        # IPv4 inside IPv6: mapped, NAT64 and 6to4 lead to the IPv4 address
        ("::ffff:127.0.0.1", Rule.LOOPBACK),
        ("::ffff:10.1.2.3", Rule.PRIVATE),
        ("::ffff:169.254.169.254", Rule.METADATA),
        ("64:ff9b::7f00:1", Rule.LOOPBACK),
        ("64:ff9b::a9fe:a9fe", Rule.METADATA),
        ("2002:a00:5::1", Rule.PRIVATE),
        ("2002:7f00:1::", Rule.LOOPBACK),
    ],
)
def test_non_public_addresses_are_refused_by_rule(address: str, rule: Rule) -> None:
    refusal = NONE_ALLOWED.refusal(ip_address(address))
    assert refusal is not None
    assert refusal.rule is rule
    assert str(refusal).startswith(f"destination {refusal.address}")


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
     "2002:808:808::1", "100.128.0.1", "172.32.0.1"],
)  # fmt: skip
def test_public_addresses_pass(address: str) -> None:
    assert NONE_ALLOWED.refusal(ip_address(address)) is None


def test_the_refusal_names_the_rule_and_the_setting() -> None:
    assert str(NONE_ALLOWED.refusal(ip_address("10.0.0.5"))) == (
        "destination 10.0.0.5 is a private address; allow it with RACKHAND_WEBHOOK_ALLOW_NETWORKS"
    )
    mapped = str(NONE_ALLOWED.refusal(ip_address("::ffff:127.0.0.1")))
    assert "(that is 127.0.0.1) is a loopback address" in mapped
    metadata = str(NONE_ALLOWED.refusal(ip_address("169.254.169.254")))
    assert "only an entry of exactly 169.254.169.254/32 in RACKHAND_WEBHOOK_ALLOW_NETWORKS" in (
        metadata
    )
    assert "never receives webhooks" in str(NONE_ALLOWED.refusal(ip_address("0.0.0.0")))


def test_the_allow_list_lets_its_networks_through_and_no_more() -> None:
    lan = Destinations([ip_network("10.20.0.0/16"), ip_network("127.0.0.0/8")])
    assert lan.refusal(ip_address("10.20.3.4")) is None
    assert lan.refusal(ip_address("::ffff:10.20.3.4")) is None
    assert lan.refusal(ip_address("127.0.0.1")) is None
    assert lan.refusal(ip_address("::ffff:127.0.0.1")) is None
    assert lan.refusal(ip_address("10.21.0.1")) is not None
    assert lan.refusal(ip_address("::1")) is not None  # IPv6 loopback is not 127.0.0.0/8


def test_metadata_unspecified_and_multicast_need_more_than_a_wide_entry() -> None:
    everything = Destinations([ip_network("0.0.0.0/0"), ip_network("::/0")])
    assert everything.refusal(ip_address("10.0.0.5")) is None
    for address in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254", "0.0.0.0", "::",
                    "224.0.0.1", "::ffff:169.254.169.254"):  # fmt: skip
        assert everything.refusal(ip_address(address)) is not None, address
    exact = Destinations([ip_network("169.254.169.254/32"), ip_network("0.0.0.0/32")])
    assert exact.refusal(ip_address("169.254.169.254")) is None
    assert exact.refusal(ip_address("0.0.0.0")) is not None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
    ],
)
def test_every_form_getaddrinfo_reads_as_an_address_is_one(host: str, address: str) -> None:
    assert literal(host) == ip_address(address)


@pytest.mark.parametrize("host", ["tickets.example.com", "cafe", "localhost", "1.2.3.4.example"])
def test_names_are_not_addresses(host: str) -> None:
    assert literal(host) is None


def test_the_system_resolver_gives_every_address_once() -> None:
    found = asyncio.run(system_resolver("localhost", 80))
    assert found
    assert len(found) == len(set(found))
    assert all(address.is_loopback for address in found)
