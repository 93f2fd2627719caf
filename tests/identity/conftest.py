"""Identity fixtures: the throttle's clock in the test's hand, an app behind a proxy, argon2
counted and held, the audit log read straight from the database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.config import Settings
from app.db import make_engine
from app.identity import secrets
from app.main import create_app

PROXY = "10.0.0.2"  # the peer of `behind_proxy`: a load balancer listed as trusted


class ManualClock:
    """Time for the throttle that moves only when a test says so: no test waits for real."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def freeze(client: TestClient) -> ManualClock:
    """Give the started app's login throttle a clock of the test's own."""
    clock = ManualClock()
    client.app.state.logins.throttle.clock = clock  # type: ignore[attr-defined]
    return clock


def forwarded(address: str) -> dict[str, str]:
    """What a proxy adds for a client at `address` (after whatever the client sent)."""
    return {"X-Forwarded-For": f"203.0.113.99, {address}"}


@pytest.fixture
def behind_proxy(settings: Settings) -> Iterator[TestClient]:
    """A started app that trusts 10.0.0.0/8 as its proxies, reached from one of them."""
    trusting = settings.model_copy(update={"trusted_proxies": ["10.0.0.0/8"]})
    app = create_app(trusting)
    with TestClient(app, raise_server_exceptions=False, client=(PROXY, 40000)) as test_client:
        test_client.base_url = test_client.base_url.join("/api/v1/")
        yield test_client


def wait_for(check: Callable[[], bool], within: float = 30.0) -> None:
    """Poll `check` from a test's own thread until it holds (the app runs in another)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@dataclass(frozen=True)
class Logged:
    source_ip: str | None
    target_name: str | None
    details: dict[str, Any]


def audit_log(settings: Settings, type_: str) -> list[Logged]:
    """The events of a type, oldest first, read from the database (no login needed)."""

    async def read() -> list[Logged]:
        engine = make_engine(settings.database_url)
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(AuditEvent.source_ip, AuditEvent.target_name, AuditEvent.details_json)
                .where(AuditEvent.type == type_)
                .order_by(AuditEvent.seq)
            )
            found = [Logged(ip, name, orjson.loads(details)) for ip, name, details in rows]
        await engine.dispose()
        return found

    return asyncio.run(read())


class Hasher:
    """argon2 at the process edge: counts verifications and can hold them inside."""

    def __init__(self, real: PasswordHasher) -> None:
        self.real = real
        self.verifying = 0  # inside verify now
        self.most = 0  # inside verify at once, at most
        self.verified = 0  # calls so far
        self.go = threading.Event()
        self.go.set()
        self._lock = threading.Lock()

    def verify(self, password_hash: str, password: str) -> bool:
        with self._lock:
            self.verified += 1
            self.verifying += 1
            self.most = max(self.most, self.verifying)
        try:
            assert self.go.wait(60), "the test never let argon2 go on"
            return bool(self.real.verify(password_hash, password))
        finally:
            with self._lock:
                self.verifying -= 1

    def hash(self, password: str) -> str:
        return str(self.real.hash(password))

    @contextmanager
    def held(self) -> Iterator[None]:
        """Verifications wait inside argon2 until the block ends (however it ends)."""
        self.go.clear()
        try:
            yield
        finally:
            self.go.set()


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> Hasher:
    counting = Hasher(secrets._hasher)
    monkeypatch.setattr(secrets, "_hasher", counting)
    return counting
