"""A real HTTP receiver on 127.0.0.1 and an app (fake power and console driver) that feeds it.

Loopback is not a place webhooks may go unless the operator allows it: `fast` settings allow
127.0.0.0/8 and ::1 (as RACKHAND_WEBHOOK_ALLOW_NETWORKS would), `guarded` ones allow nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.drivers.fake import FakeDriver
from app.config import Settings
from app.main import create_app
from app.webhooks.destinations import Resolver, system_resolver
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, site

SECRET = "whsec-0123456789abcdef-for-tests"
LOOPBACK = (ip_network("127.0.0.0/8"), ip_network("::1/128"))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every POST; answers with `statuses` in turn (then 200); `hold` blocks answers."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    failure: bytes = b"receiver is down for maintenance"  # the body of a non-2xx answer
    hold: threading.Event | None = None
    holding: threading.Event = field(default_factory=threading.Event)
    requests: list[Received] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.requests) >= count, timeout)
            assert len(self.requests) >= count, f"{len(self.requests)} requests, wanted {count}"
            return list(self.requests)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if receiver.hold is not None:
                receiver.holding.set()
                receiver.hold.wait(30)
            with receiver.changed:
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.changed.notify_all()
            answer = b'{"ok": true}' if status < 300 else receiver.failure
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


def listen(host: str = "127.0.0.1", port: int = 0) -> tuple[Receiver, ThreadingHTTPServer]:
    """A receiver serving on (host, port) until its server is shut down."""
    found = Receiver()
    server = ThreadingHTTPServer((host, port), _handler(found))
    server.daemon_threads = True
    found.url = f"http://{host}:{server.server_address[1]}/hooks/rackhand"
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    return found, server


def close(found: Receiver, server: ThreadingHTTPServer) -> None:
    if found.hold is not None:
        found.hold.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found, server = listen()
    yield found
    close(found, server)


@pytest.fixture
def dead_url() -> str:
    """A loopback port nobody listens on: every attempt is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks"


def fast(settings: Settings, **more: Any) -> Settings:
    """Back-off of 0.1 s (two retries: three attempts), a sender that looks every 50 ms,
    loopback allowed (the receivers here live there)."""
    return settings.model_copy(
        update={
            "poll_power": False,
            "webhook_retry_seconds": (0.1, 0.1),
            "webhook_poll_seconds": 0.05,
            "webhook_timeout_seconds": 2.0,
            "webhook_allow_networks": LOOPBACK,
        }
        | more
    )


@pytest.fixture
def fake() -> FakeDriver:
    return FakeDriver()


def started(
    settings: Settings, fake: FakeDriver, resolver: Resolver = system_resolver
) -> TestClient:
    app = create_app(settings, drivers={"ipmi": fake, "console_port": fake}, resolver=resolver)
    return TestClient(app, raise_server_exceptions=False)


def admin(client: TestClient) -> TestClient:
    client.base_url = client.base_url.join("/api/v1/")
    client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
    return client


def seed(client: TestClient) -> None:
    """bj-dc1 with web01..web03, sh-br12 with br01; each with an ipmi path on the fake driver."""
    site(client, "bj-dc1")
    site(client, "sh-br12", kind="branch")
    for name, where, n in (("web01", "bj-dc1", 1), ("web02", "bj-dc1", 2),
                           ("web03", "bj-dc1", 3), ("br01", "sh-br12", 4)):  # fmt: skip
        device(client, name, site=where)
        path(client, name, kind="ipmi", address=f"10.0.0.{n}", username="u", secret="bmc-pw")


@pytest.fixture
def hooked(settings: Settings, fake: FakeDriver) -> Iterator[TestClient]:
    """Admin client of an app with fast webhook retries and two seeded sites."""
    with started(fast(settings), fake) as client:
        admin(client)
        seed(client)
        yield client


@pytest.fixture
def guarded(settings: Settings, fake: FakeDriver) -> Iterator[TestClient]:
    """As `hooked`, with no network allowed: the defaults of a real installation."""
    with started(fast(settings, webhook_allow_networks=()), fake) as client:
        admin(client)
        seed(client)
        yield client


def webhook(client: TestClient, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "secret": SECRET, "events": ["job.finished", "console.closed"]} | fields
    return ok(client.post("webhooks", json=body), 201)  # type: ignore[no-any-return]


def deliveries_until(
    client: TestClient,
    webhook_id: int,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 15.0,
) -> list[dict[str, Any]]:
    """The webhook's deliveries (newest first) once `done` holds for them."""
    deadline = time.monotonic() + timeout
    while True:
        items: list[dict[str, Any]] = ok(client.get(f"webhooks/{webhook_id}/deliveries"))["items"]
        if done(items):
            return items
        assert time.monotonic() < deadline, f"deliveries never got there: {items}"
        time.sleep(0.05)


def settled(items: list[dict[str, Any]]) -> bool:
    """At least one delivery, and none still pending."""
    return bool(items) and all(item["status"] != "pending" for item in items)
