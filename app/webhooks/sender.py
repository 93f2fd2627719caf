"""The background sender: committed deliveries out to their receivers, signed, with retries.

Every `poll` seconds it claims the deliveries that are due (at most `max_in_flight` under
way at once) by pushing their `next_attempt_at` past a lease, commits, and only then talks to
the receivers: no transaction is held across network I/O, a slow or dead receiver holds one
slot for at most `timeout` seconds, and jobs never wait for any of it. A central that stops
mid-attempt leaves the lease to run out; the delivery is then tried again (at least once).
On PostgreSQL, `SKIP LOCKED` lets several replicas share the outbox.

Each attempt resolves the receiver's name itself, checks every address it gets
(`destinations.py`), and connects to a checked address only: the URL is sent to with that
address in place of the name, the `Host` header and TLS (SNI, the certificate's name) keep
the name, and nothing is pooled, so httpx never looks the name up again (no DNS rebinding).
What the receiver answers is kept as its status code, never its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import utcnow
from app.uow import unit_of_work
from app.urls import REDACT_URLS, redact_urls
from app.vault import Vault
from app.webhooks.destinations import (
    Destinations,
    IPAddress,
    Resolver,
    literal,
    system_resolver,
)
from app.webhooks.models import Delivery, DeliveryStatus, Webhook

log = logging.getLogger(__name__)

USER_AGENT = "Rackhand-Webhooks/0.1"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of "<timestamp>.<body>" (the X-Rackhand-Signature header)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True)
class Policy:
    retry_seconds: tuple[float, ...]
    timeout: float
    poll: float
    max_in_flight: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            retry_seconds=settings.webhook_retry_seconds,
            timeout=settings.webhook_timeout_seconds,
            poll=settings.webhook_poll_seconds,
            max_in_flight=max(1, settings.webhook_max_in_flight),
        )

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery stays claimed: past any attempt's end."""
        return timedelta(seconds=self.timeout + 30)


@dataclass(frozen=True)
class _Attempt:
    delivery_id: str
    event: str
    payload: str
    url_ciphertext: bytes
    secret_ciphertext: bytes


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None
    final: bool = False  # no retry can help (a refused destination)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        write_sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        policy: Policy,
        destinations: Destinations,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._sessions = sessions
        self._write = write_sessions
        self._vault = vault
        self._policy = policy
        self._destinations = destinations
        self._resolve = resolver
        self._loop: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        # No keep-alive: a pooled connection is keyed by the address it went to, and must
        # not carry another name's request (or outlive the check it was made after). An
        # explicit transport also leaves the environment's proxies out (a proxy would connect
        # where it likes); its SSL_CERT_FILE / SSL_CERT_DIR are still honoured.
        limits = httpx.Limits(
            max_connections=self._policy.max_in_flight, max_keepalive_connections=0
        )
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(limits=limits),
            follow_redirects=False,
            timeout=httpx.Timeout(self._policy.timeout),
            headers={"User-Agent": USER_AGENT},
        )

    def start(self) -> None:
        # httpx logs each request with its URL, and a traceback may quote one: a receiver's
        # token must not reach the log that way.
        for logger in (logging.getLogger("httpx"), log):
            logger.addFilter(REDACT_URLS)
        self._loop = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self) -> None:
        """Stop claiming; attempts under way get their timeout to finish, then are cut."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._sending:
            _, late = await asyncio.wait(self._sending, timeout=self._policy.timeout + 1)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                await self.send_due()
            except Exception:  # the database may be back at the next round
                log.exception("webhook sender: claiming deliveries failed")
            await asyncio.sleep(self._policy.poll)

    async def send_due(self) -> int:
        """Claim what is due (within the free slots) and start sending it; how many started."""
        free = self._policy.max_in_flight - len(self._sending)
        if free <= 0:
            return 0
        now = utcnow()
        due = (Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        async with self._sessions() as session:  # a cheap look first: no write lock when idle
            if await session.scalar(select(Delivery.id).where(*due).limit(1)) is None:
                return 0
        attempts = []
        async with unit_of_work(self._write) as session:
            query = (
                select(Delivery, Webhook)
                .join(Webhook, Webhook.id == Delivery.webhook_id)
                .where(*due)
                .order_by(Delivery.next_attempt_at)
                .limit(free)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(of=Delivery, skip_locked=True)
            for delivery, webhook in (await session.execute(query)).all():
                if not webhook.active:
                    delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
                    delivery.last_error = "the webhook was deactivated; redeliver once it is active"
                    continue
                delivery.next_attempt_at = now + self._policy.lease
                attempts.append(
                    _Attempt(
                        delivery.id,
                        delivery.event.value,
                        delivery.payload,
                        webhook.url_ciphertext,
                        webhook.secret_ciphertext,
                    )
                )
        for attempt in attempts:
            task = asyncio.create_task(self._deliver(attempt), name="webhook-delivery")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return len(attempts)

    async def _deliver(self, attempt: _Attempt) -> None:
        try:
            outcome = await self._post(attempt)
        except Exception as exc:  # a bug or a bad stored secret: record it, never lose the row
            log.exception("webhook delivery %s could not be attempted", attempt.delivery_id)
            outcome = _Outcome(None, redact_urls(f"not sent: {type(exc).__name__}: {exc}"))
        try:
            await self._record(attempt.delivery_id, outcome)
        except Exception:  # the lease runs out and the delivery is tried again
            log.exception("webhook delivery %s: writing the outcome failed", attempt.delivery_id)

    async def _post(self, attempt: _Attempt) -> _Outcome:
        url = httpx.URL(self._vault.decrypt(attempt.url_ciphertext))
        body = attempt.payload.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Rackhand-Event": attempt.event,
            "X-Rackhand-Delivery": attempt.delivery_id,
            "X-Rackhand-Timestamp": timestamp,
            "X-Rackhand-Signature": signature(
                self._vault.decrypt(attempt.secret_ciphertext), timestamp, body
            ),
        }
        try:
            async with asyncio.timeout(self._policy.timeout):
                found = await self._addresses(url)
                if isinstance(found, _Outcome):
                    return found
                return await self._send(url, found, body, headers)
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(None, f"no answer within {self._policy.timeout:g} s")

    async def _addresses(self, url: httpx.URL) -> list[IPAddress] | _Outcome:
        """Where the URL's host is now, every address checked; else why nothing is sent."""
        name = url.raw_host.decode("ascii")
        address = literal(name)
        if address is not None:
            addresses = [address]
        else:
            try:
                addresses = list(await self._resolve(name, url.port or _PORTS[url.scheme]))
            except OSError as exc:  # socket.gaierror: no such name, or no answer
                return _Outcome(None, f"could not resolve {name}: {exc.strerror or exc}")
            if not addresses:
                return _Outcome(None, f"could not resolve {name}: no address")
        for checked in addresses:
            refusal = self._destinations.refusal(checked)
            if refusal is not None:
                where = "" if address is not None else f" to {name}"
                log.warning("webhook delivery refused%s: %s", where, refusal)
                return _Outcome(None, f"not sent{where}: {refusal}", final=True)
        return addresses

    async def _send(
        self, url: httpx.URL, addresses: list[IPAddress], body: bytes, headers: dict[str, str]
    ) -> _Outcome:
        """POST to each checked address in turn until one takes the connection."""
        name = url.raw_host.decode("ascii")
        pinned = headers | {"Host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": name} if literal(name) is None else {}
        failure = _Outcome(None, "no address to connect to")
        for address in addresses:
            target = url.copy_with(host=str(address))
            try:
                async with self._client.stream(
                    "POST", target, content=body, headers=pinned, extensions=extensions
                ) as answer:
                    return _answered(answer)
            except httpx.ConnectError as exc:  # refused, unreachable, TLS: the next address
                failure = _Outcome(None, _failed(exc, address))
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError as exc:
                return _Outcome(None, _failed(exc, address))
        return failure

    async def _record(self, delivery_id: str, outcome: _Outcome) -> None:
        now = utcnow()
        async with unit_of_work(self._write) as session:
            delivery = await session.get(Delivery, delivery_id)
            if delivery is None or delivery.status is not DeliveryStatus.PENDING:
                return  # its webhook was deleted meanwhile
            delivery.attempts += 1
            delivery.last_attempt_at = now
            delivery.last_status_code = outcome.status_code
            delivery.last_error = outcome.error
            if outcome.delivered:
                delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, now
                delivery.next_attempt_at = None
            elif outcome.final or delivery.attempts > len(self._policy.retry_seconds):
                delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
            else:
                pause = self._policy.retry_seconds[delivery.attempts - 1]
                delivery.next_attempt_at = now + timedelta(seconds=pause)
        if not outcome.delivered:
            log.info("webhook delivery %s failed: %s", delivery_id, outcome.error)


_PORTS = {"http": 80, "https": 443}


def _answered(answer: httpx.Response) -> _Outcome:
    """The status code only: a receiver's answer (a body, a Location) is never kept or shown."""
    code = answer.status_code
    if 200 <= code < 300:
        return _Outcome(code, None)
    if answer.is_redirect:
        return _Outcome(code, f"answered {code}, a redirect; redirects are not followed")
    return _Outcome(code, f"answered {code}")


def _failed(exc: httpx.HTTPError, address: IPAddress) -> str:
    """Our own words for a failed exchange: a protocol error may quote what the peer sent."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.ProtocolError):
        return f"{kind} ({address}): the answer was not HTTP/1.1"
    return redact_urls(f"{kind} ({address}): {str(exc) or 'no detail'}")
