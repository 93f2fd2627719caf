"""Webhooks as a way into the data center (issue 12): each test performs the attack.

A site admin chooses a webhook's URL and reads its deliveries; the central sits next to the
metadata service, the BMC network and its own database. Receivers here are real listeners
on loopback addresses, which only an allow-list lets webhooks reach.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.drivers.fake import FakeDriver
from app.config import Settings
from app.webhooks.destinations import IPAddress
from tests.conftest import login
from tests.factories import error, ok
from tests.live import private_ca
from tests.webhooks.conftest import (
    SECRET,
    Receiver,
    admin,
    close,
    deliveries_until,
    fast,
    listen,
    seed,
    settled,
    started,
    webhook,
)

SETTING = "RACKHAND_WEBHOOK_ALLOW_NETWORKS"
LEAKED = "root:x:0:0:secret-of-the-internal-service"


def _site_admin(client: TestClient) -> str:
    """A token of carol, admin of sh-br12 only (and viewer everywhere)."""
    password = "site-admin-password"
    grants = [{"role": "admin", "sites": ["sh-br12"]}, {"role": "viewer"}]
    body = {"username": "carol", "password": password, "grants": grants}
    ok(client.post("users", json=body), 201)
    return login(client, "carol", password)


def _hook(url: str, **fields: Any) -> dict[str, Any]:
    return {"url": url, "secret": SECRET, "events": ["job.finished"]} | fields


def _power(client: TestClient, device: str = "web01") -> None:
    ok(client.post(f"devices/{device}/power", json={"action": "on", "wait": 10}))


def _settled(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda items: len(items) == count and settled(items)


def _as(client: TestClient, token: str) -> TestClient:
    client.headers["Authorization"] = f"Bearer {token}"
    return client


INTERNAL = [
    ("http://127.0.0.1:{port}/hooks", "destination 127.0.0.1 is a loopback address"),
    ("http://[::1]:{port}/hooks", "destination ::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]:{port}/", "(that is 127.0.0.1) is a loopback address"),
    ("http://127.1:{port}/", "destination 127.0.0.1 is a loopback address"),
    ("https://2130706433:{port}/", "destination 127.0.0.1 is a loopback address"),
    ("https://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 is a cloud metadata"),
    ("https://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254 is a cloud metadata"),
    ("https://100.100.100.200/latest/meta-data/", "100.100.100.200 is a cloud metadata"),
    ("https://10.0.0.5:9200/_cat/indices", "destination 10.0.0.5 is a private address"),
    ("https://192.168.1.20/redfish/v1", "192.168.1.20 is a private address"),
    ("https://100.64.0.1/", "100.64.0.1 is a shared (CGNAT) address"),
    ("https://[fe80::1]/", "fe80::1 is a link-local address"),
    ("https://[fd12::5]/", "fd12::5 is a unique-local address"),
    ("https://0.0.0.0:{port}/", "0.0.0.0 is the unspecified address"),
]


def test_a_site_admin_cannot_aim_a_webhook_at_an_internal_address(
    guarded: TestClient, receiver: Receiver
) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    _as(guarded, _site_admin(guarded))
    mine = webhook(guarded, "https://tickets.example.com/hooks", sites=["sh-br12"], active=False)
    for url, words in INTERNAL:
        url = url.format(port=port)
        for answer in (
            guarded.post("webhooks", json=_hook(url, sites=["sh-br12"])),
            guarded.patch(f"webhooks/{mine['id']}", json={"url": url}),
        ):
            detail = error(answer, 422)
            assert detail.startswith("url: destination "), url
            assert words in detail, url
            if "unspecified" not in words:
                assert SETTING in detail  # says how an operator lets an internal receiver in
    assert ok(guarded.get("webhooks")) == [mine]  # nothing stored, the old URL kept
    _power(guarded, "br01")
    assert receiver.requests == []


def test_a_name_or_an_old_url_reaching_loopback_is_refused_at_delivery_not_retried(
    settings: Settings, fake: FakeDriver, receiver: Receiver
) -> None:
    with started(fast(settings), fake) as client:  # loopback allowed then: an old webhook
        admin(client)
        seed(client)
        old = webhook(client, receiver.url)
    with started(fast(settings, webhook_allow_networks=()), fake) as client:
        admin(client)
        port = receiver.url.split(":")[2].split("/")[0]
        named = webhook(client, f"http://localhost:{port}/hooks/rackhand")  # names: at delivery
        _power(client)
        [stored] = deliveries_until(client, old["id"], settled)
        [resolved] = deliveries_until(client, named["id"], settled)
    assert stored["last_error"] == (
        f"not sent: destination 127.0.0.1 is a loopback address; allow it with {SETTING}"
    )
    assert resolved["last_error"].startswith("not sent to localhost: destination ")
    assert "is a loopback address" in resolved["last_error"]
    for delivery in (stored, resolved):
        assert (delivery["status"], delivery["attempts"]) == ("failed", 1)  # no retry helps
        assert delivery["last_status_code"] is None
    assert receiver.requests == []


@pytest.fixture
def rebound() -> Iterator[tuple[Receiver, Receiver]]:
    """A receiver on 127.0.0.3 and, on the same port of 127.0.0.1, the service it hides."""
    for _ in range(20):
        found, server = listen("127.0.0.3")
        port = server.server_address[1]
        try:
            victim, victim_server = listen("127.0.0.1", port)
        except OSError:  # that port is taken on 127.0.0.1: another one
            close(found, server)
            continue
        yield found, victim
        close(victim, victim_server)
        close(found, server)
        return
    pytest.fail("no port free on both 127.0.0.1 and 127.0.0.3")


def test_dns_rebinding_reaches_only_the_address_that_was_checked(
    settings: Settings, fake: FakeDriver, rebound: tuple[Receiver, Receiver]
) -> None:
    receiver, victim = rebound
    port = int(receiver.url.split(":")[2].split("/")[0])
    answers: list[list[IPAddress]] = [
        [ip_address("127.0.0.3")],  # the allowed address, then a rebinding to loopback
        [ip_address("127.0.0.1")],
        [ip_address("127.0.0.3"), ip_address("127.0.0.1")],
    ]
    asked: list[tuple[str, int]] = []

    async def rebinding(host: str, port: int) -> Sequence[IPAddress]:
        asked.append((host, port))
        return answers[min(len(asked), len(answers)) - 1]

    allowed = fast(settings, webhook_allow_networks=(ip_network("127.0.0.3/32"),))
    with started(allowed, fake, resolver=rebinding) as client:
        admin(client)
        seed(client)
        # the system's resolver says 127.0.0.1 for localhost: a second lookup reaches the victim
        hook = webhook(client, f"http://localhost:{port}/hooks/rackhand", events=["job.finished"])
        _power(client)
        [request] = receiver.wait_for(1)
        assert request.headers["Host"] == f"localhost:{port}"
        [first] = deliveries_until(client, hook["id"], settled)
        assert first["status"] == "delivered"
        assert asked == [("localhost", port)]  # one lookup, ours; httpx made none

        for expected in (2, 3):
            again = f"webhooks/{hook['id']}/deliveries/{first['id']}/redeliver"
            ok(client.post(again), 202)
            items = deliveries_until(client, hook["id"], _settled(expected))
            assert items[0]["status"] == "failed"
            assert items[0]["attempts"] == 1
            assert "destination 127.0.0.1 is a loopback address" in items[0]["last_error"]
    assert len(asked) == 3
    assert len(receiver.requests) == 1
    assert victim.requests == []


class _Peer(socketserver.ThreadingTCPServer):
    """A TCP service on 127.0.0.1 that answers every connection with the same bytes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: bytes, speaks_first: bool = False) -> None:
        self.answer, self.speaks_first = answer, speaks_first
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _PeerHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"


class _PeerHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        peer = self.server
        assert isinstance(peer, _Peer)
        peer.connections += 1
        connection: socket.socket = self.request
        connection.settimeout(10)
        if peer.speaks_first:  # as SSH does; then it reads what the client says
            connection.sendall(peer.answer)
        head = b""
        while b"\r\n\r\n" not in head:
            head += connection.recv(65536) or b"\r\n\r\n"
        lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-len")]
        length = int(lengths[0].split(b":")[1]) if lengths else 0
        body = head.partition(b"\r\n\r\n")[2]
        while len(body) < length:
            body += connection.recv(65536) or b"x" * length
        if not peer.speaks_first:
            connection.sendall(peer.answer)
        connection.shutdown(socket.SHUT_WR)


@pytest.fixture
def peers() -> Iterator[list[_Peer]]:
    made: list[_Peer] = []
    yield made
    for peer in made:
        peer.shutdown()
        peer.server_close()


def test_the_deliveries_api_shows_no_byte_of_what_a_peer_answered(
    hooked: TestClient, peers: list[_Peer]
) -> None:
    secret = LEAKED.encode()
    failing = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(secret), secret)
    redirect = b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.5/" + secret + b"\r\n\r\n"
    banner = b"SSH-2.0-OpenSSH_9.6 " + secret + b"\r\n"
    peers += [_Peer(failing), _Peer(redirect), _Peer(banner, speaks_first=True)]
    hooks = [webhook(hooked, peer.url, events=["job.finished"]) for peer in peers]
    _power(hooked)
    found = [deliveries_until(hooked, hook["id"], settled)[0] for hook in hooks]
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in found] == [
        ("failed", 3, 500),
        ("failed", 3, 302),
        ("failed", 3, None),
    ]
    assert [d["last_error"] for d in found] == [
        "answered 500",
        "answered 302, a redirect; redirects are not followed",
        "RemoteProtocolError (127.0.0.1): the answer was not HTTP/1.1",
    ]
    assert all(peer.connections == 3 for peer in peers)
    shown = "\n".join(
        hooked.get(path).text
        for path in ["webhooks", "audit", *(f"webhooks/{hook['id']}/deliveries" for hook in hooks)]
    )
    assert "secret-of-the-internal-service" not in shown


def test_a_site_admin_never_makes_or_widens_a_webhook_of_every_site(hooked: TestClient) -> None:
    token = _site_admin(hooked)
    carol = {"Authorization": f"Bearer {token}"}
    named = ok(hooked.post("tokens", json={"name": "ci", "role": "admin"}, headers=carol), 201)
    url = "https://tickets.example.com/hooks"
    for credential in (token, named["token"]):
        _as(hooked, credential)
        for body in (_hook(url), _hook(url, sites=None)):
            assert "needs the admin role on every site" in error(
                hooked.post("webhooks", json=body), 403
            )
        mine = webhook(hooked, url, sites=["sh-br12"], active=False)
        error(hooked.patch(f"webhooks/{mine['id']}", json={"sites": None}), 403)
        assert ok(hooked.get(f"webhooks/{mine['id']}"))["sites"] == ["sh-br12"]
    admin(hooked)
    denied = ok(hooked.get("audit", params={"type": "access.denied"}))["items"]
    assert len([event for event in denied if event["target_type"] == "webhook"]) == 6


def test_a_long_url_is_stored_and_audited_and_a_too_long_one_is_a_422(hooked: TestClient) -> None:
    """On PostgreSQL a URL over 200 characters was a 500: the audit names targets in 200."""
    long = "https://tickets.example.com/hooks/" + "p" * 300 + "?token=" + "t" * 100
    created = webhook(hooked, long)
    assert created["url"] == long.replace("t" * 100, "***")
    changed = ok(hooked.patch(f"webhooks/{created['id']}", json={"url": long + "&x=1"}))
    events = ok(hooked.get("audit", params={"type": "webhook.*"}))["items"]
    names = {event["target_name"] for event in events}
    assert names == {created["url"][:199] + "…"}
    assert events[-1]["details"]["after"]["url"] == created["url"]  # the whole URL is kept
    assert changed["url"] == created["url"] + "&x=***"

    too_long = "https://tickets.example.com/" + "p" * 2048
    for answer in (
        hooked.post("webhooks", json=_hook(too_long)),
        hooked.patch(f"webhooks/{created['id']}", json={"url": too_long}),
    ):
        assert error(answer, 422) == "url: String should have at most 2048 characters"

    _as(hooked, _site_admin(hooked))  # a refusal is audited with the URL as its name too
    error(hooked.post("webhooks", json=_hook(long)), 403)


def test_https_to_a_pinned_address_keeps_the_name_for_sni_and_the_certificate(
    settings: Settings, fake: FakeDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "hooks.example.test"
    ca, cert, key = private_ca(tmp_path, name)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # as an operator trusts a private CA
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_side.sni_callback = lambda _sock, server_name, _context: names.append(server_name)
    found, server = listen()
    server.socket = server_side.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    asked: list[str] = []

    async def hosts(host: str, port: int) -> Sequence[IPAddress]:
        asked.append(host)
        return [ip_address("127.0.0.1")]

    try:
        with started(fast(settings), fake, resolver=hosts) as client:
            admin(client)
            seed(client)
            good = webhook(client, f"https://{name}:{port}/hooks", events=["job.finished"])
            wrong = webhook(
                client, f"https://other.example.test:{port}/hooks", events=["job.finished"]
            )
            _power(client)
            [request] = found.wait_for(1)
            [delivered] = deliveries_until(client, good["id"], settled)
            [refused] = deliveries_until(client, wrong["id"], settled)
    finally:
        close(found, server)
    assert delivered["status"] == "delivered"
    assert request.headers["Host"] == f"{name}:{port}"
    assert name in names  # SNI named the host, though the connection went to 127.0.0.1
    assert refused["status"] == "failed"
    assert "certificate verify failed" in refused["last_error"]  # checked against the name
    assert set(asked) == {name, "other.example.test"}
