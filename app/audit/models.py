"""ORM models of the audit log: append-only events and the head of their hash chain."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime

GENESIS = "0" * 64


class Outcome(StrEnum):
    """How an event ended, as its `outcome` column says (a filter of the audit list)."""

    SUCCESS = "success"
    FAILURE = "failure"  # a failed login, a device that did not do it
    DENIED = "denied"  # refused: a role too weak, a hidden object, a rejected credential
    SKIPPED = "skipped"  # a job's task never sent (a device without a power path)


class EventType(StrEnum):
    """What an event records. Stored as its value under the hash chain, so a member's spelling
    never changes; the `type` column still reads any string (rows older than a member)."""

    AUTH_LOGIN = "auth.login"
    AUTH_LOGIN_FAILED = "auth.login_failed"
    AUTH_REJECTED = "auth.rejected"  # credentials nobody owns, counted per address
    ACCESS_DENIED = "access.denied"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DELETED = "user.deleted"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"

    SITE_CREATED = "site.created"
    SITE_UPDATED = "site.updated"
    SITE_DELETED = "site.deleted"
    RACK_CREATED = "rack.created"
    RACK_UPDATED = "rack.updated"
    RACK_DELETED = "rack.deleted"
    DEVICE_CREATED = "device.created"
    DEVICE_UPDATED = "device.updated"
    DEVICE_DELETED = "device.deleted"
    GUEST_CREATED = "guest.created"
    GUEST_UPDATED = "guest.updated"
    GUEST_GONE = "guest.gone"
    HYPERVISOR_SYNCED = "hypervisor.synced"
    DEVICES_IMPORTED = "devices.imported"
    PATH_CREATED = "path.created"
    PATH_UPDATED = "path.updated"
    PATH_DELETED = "path.deleted"

    # A job's task: `<job kind>.requested` (or `.skipped`), then its final status.
    POWER_REQUESTED = "power.requested"
    POWER_SKIPPED = "power.skipped"
    POWER_SUCCEEDED = "power.succeeded"
    POWER_FAILED = "power.failed"
    POWER_TIMEOUT = "power.timeout"
    POWER_CANCELLED = "power.cancelled"
    POWER_LOST = "power.lost"
    BOOT_REQUESTED = "boot.requested"
    BOOT_SKIPPED = "boot.skipped"
    BOOT_SUCCEEDED = "boot.succeeded"
    BOOT_FAILED = "boot.failed"
    BOOT_TIMEOUT = "boot.timeout"
    BOOT_CANCELLED = "boot.cancelled"
    BOOT_LOST = "boot.lost"
    POWER_DRIFT = "power.drift"  # the poller saw a change no job made
    HEALTH_CHANGED = "health.changed"  # a device's verdict on its sensors changed
    HEALTH_EVENTS_CLEARED = "health.events_cleared"  # a BMC's event log, cleared by a person
    JOB_CANCELLED = "job.cancelled"

    CONSOLE_REQUESTED = "console.requested"
    CONSOLE_OPENED = "console.opened"
    CONSOLE_FAILED = "console.failed"
    CONSOLE_CLOSED = "console.closed"
    CONSOLE_JOINED = "console.joined"
    CONSOLE_LEFT = "console.left"
    CONSOLE_WRITE_FORCED = "console.write_forced"
    CONSOLE_WRITE_HANDED = "console.write_handed"
    CONSOLE_BREAK = "console.break"
    CONSOLE_RECORDING_READ = "console.recording_read"
    SSH_HOST_KEY_PINNED = "ssh.host_key_pinned"

    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_UPDATED = "webhook.updated"
    WEBHOOK_DELETED = "webhook.deleted"
    WEBHOOK_REDELIVERED = "webhook.redelivered"

    AGENT_ENROLLED = "agent.enrolled"
    AGENT_JOINED = "agent.joined"
    AGENT_REVOKED = "agent.revoked"
    AGENT_CONNECTED = "agent.connected"
    AGENT_DISCONNECTED = "agent.disconnected"
    AGENT_SITE_REFUSED = "agent.site_refused"
    AGENT_MESSAGE_REFUSED = "agent.message_refused"


class AuditEvent(Base):
    """One event; `hash = sha256(prev_hash || canonical_json(fields))`. Never updated."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_type_at", "type", "at"),
        Index("ix_audit_event_target_type_target_name", "target_type", "target_name"),
        Index("ix_audit_event_actor_name", "actor_name"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    type: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_name: Mapped[str] = mapped_column(String(128))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[int | None] = mapped_column(BigInteger)
    target_name: Mapped[str | None] = mapped_column(String(200))
    site: Mapped[str | None] = mapped_column(String(64), index=True)
    ticket: Mapped[str | None] = mapped_column(String(128), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(64))
    # The details as the canonical JSON text that was hashed: no JSON/JSONB round trip can
    # change a number's spelling under the hash.
    details_json: Mapped[str] = mapped_column("details", Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    @property
    def details(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.details_json)
        return value


class AuditHead(Base):
    """A single row: the last sequence number and hash. Locking it serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
