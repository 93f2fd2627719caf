"""The background sender: committed deliveries out to their receivers, signed, with retries.

Every `poll` seconds it claims the deliveries that are due (at most `max_in_flight` under
way at once) by pushing their `next_attempt_at` past a lease, commits, and only then talks to
the receivers: no transaction is held across network I/O, a slow or dead receiver holds one
slot for at most `timeout` seconds, and jobs never wait for any of it. A central that stops
mid-attempt leaves the lease to run out; the delivery is then tried again (at least once).
On PostgreSQL, `SKIP LOCKED` lets several replicas share the outbox.
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
from app.webhooks.models import Delivery, DeliveryStatus, Webhook

log = logging.getLogger(__name__)

USER_AGENT = "Rackhand-Webhooks/0.1"
_SNIPPET = 200  # characters of a failed answer's body kept in `last_error`


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
    ) -> None:
        self._sessions = sessions
        self._write = write_sessions
        self._vault = vault
        self._policy = policy
        self._loop: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        # httpx logs each request with its URL, and a traceback may quote one: a receiver's
        # token must not reach the log that way.
        for logger in (logging.getLogger("httpx"), log):
            logger.addFilter(REDACT_URLS)
        limits = httpx.Limits(max_connections=self._policy.max_in_flight)
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(self._policy.timeout),
            limits=limits,
            headers={"User-Agent": USER_AGENT},
        )
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
        if self._client is not None:
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
        assert self._client is not None
        url = self._vault.decrypt(attempt.url_ciphertext)
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
            async with (
                asyncio.timeout(self._policy.timeout),
                self._client.stream("POST", url, content=body, headers=headers) as answer,
            ):
                if 200 <= answer.status_code < 300:
                    return _Outcome(answer.status_code, None)
                return _Outcome(answer.status_code, await _describe(answer))
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(None, f"no answer within {self._policy.timeout:g} s")
        except httpx.HTTPError as exc:
            return _Outcome(None, redact_urls(f"{type(exc).__name__}: {exc or 'no detail'}"))

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
            elif delivery.attempts > len(self._policy.retry_seconds):
                delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
            else:
                pause = self._policy.retry_seconds[delivery.attempts - 1]
                delivery.next_attempt_at = now + timedelta(seconds=pause)
        if not outcome.delivered:
            log.info("webhook delivery %s failed: %s", delivery_id, outcome.error)


async def _describe(answer: httpx.Response) -> str:
    """Why a non-2xx answer failed, with the start of its body (read no further than that)."""
    if answer.is_redirect:
        where = answer.headers.get("location", "?")
        where = redact_urls(where)[:_SNIPPET]
        return f"answered {answer.status_code} to {where}; redirects are not followed"
    head = b""
    async for chunk in answer.aiter_bytes():
        head += chunk
        if len(head) >= _SNIPPET:
            break
    text = head[:_SNIPPET].decode(errors="replace").strip()
    return f"answered {answer.status_code}" + (f": {redact_urls(text)}" if text else "")
