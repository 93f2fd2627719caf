"""Where webhooks may go: public addresses, and the internal networks an operator allows.

A webhook's URL is chosen by an admin (of a site, perhaps), and the central sits inside the
data center: without a rule it would reach the cloud's metadata service, the database, the
BMC network. The rule is written out here as tables rather than taken from
`ipaddress.is_global`, whose answers changed between Python releases (3.11.7 calls
224.0.0.1, fec0::1 and 2002:7f00:1:: global); `ipaddress` only parses.

An address is refused when it (or the IPv4 address it embeds: `::ffff:a.b.c.d`, NAT64
`64:ff9b::/96`, 6to4 `2002::/16`) is in one of the special-purpose networks below, or is an
IPv6 address outside global unicast (`2000::/3`). `RACKHAND_WEBHOOK_ALLOW_NETWORKS` lets
chosen networks through, except the unspecified and multicast addresses (never a receiver)
and the cloud metadata addresses, which only an entry of exactly that address allows.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
# What a name points to now; tests give their own (a DNS-rebinding resolver, for one).
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

ALLOW_SETTING = "RACKHAND_WEBHOOK_ALLOW_NETWORKS"


class Rule(StrEnum):
    """Why an address may not receive webhooks (the words of the refusal)."""

    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    METADATA = "cloud metadata"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    PRIVATE = "private"
    UNIQUE_LOCAL = "unique-local"
    SHARED = "shared (CGNAT)"
    RESERVED = "reserved (not globally routed)"


NEVER = frozenset({Rule.UNSPECIFIED, Rule.MULTICAST})

# Instance metadata and host services of clouds, reachable from a VM without credentials.
METADATA = frozenset(
    ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean, Hetzner
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS Pod Identity
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address)
        "192.0.0.192",  # Oracle Cloud Classic
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity over IPv6
        "fd20:ce::254",  # GCP over IPv6
    )
)

# The IANA special-purpose registries, most specific first where they overlap.
SPECIAL: tuple[tuple[IPNetwork, Rule], ...] = tuple(
    (ip_network(network), rule)
    for network, rule in (
        ("0.0.0.0/32", Rule.UNSPECIFIED),
        ("0.0.0.0/8", Rule.RESERVED),  # "this network"
        ("10.0.0.0/8", Rule.PRIVATE),
        ("100.64.0.0/10", Rule.SHARED),
        ("127.0.0.0/8", Rule.LOOPBACK),
        ("169.254.0.0/16", Rule.LINK_LOCAL),
        ("172.16.0.0/12", Rule.PRIVATE),
        ("192.0.0.0/24", Rule.RESERVED),  # IETF protocol assignments
        ("192.0.2.0/24", Rule.RESERVED),  # documentation
        ("192.88.99.0/24", Rule.RESERVED),  # 6to4 relays (deprecated)
        ("192.168.0.0/16", Rule.PRIVATE),
        ("198.18.0.0/15", Rule.RESERVED),  # benchmarking
        ("198.51.100.0/24", Rule.RESERVED),  # documentation
        ("203.0.113.0/24", Rule.RESERVED),  # documentation
        ("224.0.0.0/4", Rule.MULTICAST),
        ("240.0.0.0/4", Rule.RESERVED),  # future use, and the broadcast address
        ("::/128", Rule.UNSPECIFIED),
        ("::1/128", Rule.LOOPBACK),
        ("64:ff9b:1::/48", Rule.PRIVATE),  # NAT64 of a local network
        ("2001::/23", Rule.RESERVED),  # IETF protocol assignments, Teredo
        ("2001:db8::/32", Rule.RESERVED),  # documentation
        ("3fff::/20", Rule.RESERVED),  # documentation
        ("5f00::/16", Rule.RESERVED),  # SRv6 segment ids
        ("fc00::/7", Rule.UNIQUE_LOCAL),
        ("fe80::/10", Rule.LINK_LOCAL),
        ("fec0::/10", Rule.PRIVATE),  # site-local (deprecated)
        ("ff00::/8", Rule.MULTICAST),
    )
)
_GLOBAL_UNICAST = IPv6Network("2000::/3")
_NAT64 = IPv6Network("64:ff9b::/96")
_INET_ATON = re.compile(r"[0-9a-fA-FxX.]+")


@dataclass(frozen=True)
class Refusal:
    """A refused address and the rule it broke; its text is what a delivery or a 422 says."""

    address: IPAddress
    rule: Rule
    embedded: IPv4Address | None = None

    def __str__(self) -> str:
        shown = f"{self.address} (that is {self.embedded})" if self.embedded else str(self.address)
        if self.rule is Rule.UNSPECIFIED:
            return f"destination {shown} is the unspecified address: it never receives webhooks"
        if self.rule is Rule.MULTICAST:
            return f"destination {shown} is a multicast address: it never receives webhooks"
        if self.rule is Rule.METADATA:
            exact = self.embedded or self.address
            return (
                f"destination {shown} is a cloud metadata address; only an entry of exactly "
                f"{exact}/{exact.max_prefixlen} in {ALLOW_SETTING} allows it"
            )
        return f"destination {shown} is a {self.rule} address; allow it with {ALLOW_SETTING}"


def literal(host: str) -> IPAddress | None:
    """The address a URL's host names without DNS, in any form the C library accepts.

    `127.1`, `2130706433` and `0x7f.0.0.1` are 127.0.0.1 to `getaddrinfo`, so to us too.
    """
    try:
        return ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        pass
    if _INET_ATON.fullmatch(host):
        try:
            return IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one leads to: mapped, NAT64 (well-known prefix) or 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _rule(address: IPAddress) -> Rule | None:
    if address in METADATA:
        return Rule.METADATA
    for network, rule in SPECIAL:
        if address in network:
            return rule
    if isinstance(address, IPv6Address) and address not in _GLOBAL_UNICAST:
        return None if address in _NAT64 else Rule.RESERVED
    return None


class Destinations:
    """The rule above with the operator's allow-list (`RACKHAND_WEBHOOK_ALLOW_NETWORKS`)."""

    def __init__(self, allow: Iterable[IPNetwork] = ()) -> None:
        self._allow = tuple(allow)

    def refusal(self, address: IPAddress) -> Refusal | None:
        """Why `address` may not receive webhooks, or None when it may."""
        embedded = None
        if isinstance(address, IPv6Address):
            address = IPv6Address(int(address))  # without a %zone
            embedded = _embedded(address)
        checked: list[IPAddress] = [address]
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            checked = [address.ipv4_mapped]  # a dual-stack socket connects to it
        elif embedded is not None:
            checked.append(embedded)  # NAT64, 6to4: the gateway, and where it leads
        for one in checked:
            rule = _rule(one)
            if rule is not None and not self._allows(one, rule):
                return Refusal(address, rule, embedded)
        return None

    def _allows(self, address: IPAddress, rule: Rule) -> bool:
        if rule in NEVER:
            return False
        if rule is Rule.METADATA:
            return any(
                network.prefixlen == network.max_prefixlen and address in network
                for network in self._allow
            )
        return any(address in network for network in self._allow)


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address `getaddrinfo` gives for a TCP connection, in its order (RFC 6724)."""
    found = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses
