"""A job is one request (power or boot) over one or many devices; a task is one device's part."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from agents.protocol import FINISHED, PowerState, TaskStatus
from app.audit.models import EventType
from app.db import Base, EnumText, JSONType, UTCDateTime, status_in, utcnow


class JobKind(StrEnum):
    POWER = "power"
    BOOT = "boot"


class JobStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"  # some tasks succeeded, some did not
    CANCELLED = "cancelled"


ACTIVE = (TaskStatus.QUEUED, TaskStatus.RUNNING)
ACTIVE_SQL = status_in(ACTIVE)  # as text, for the partial indexes below
_ACTIVE_SQL = text(f"exclusive AND {ACTIVE_SQL}")

# A task's audit events: `power.requested` when asked, then `power.<final status>` (`boot.…`
# alike); a pair without its member fails here, at import, rather than at the task's end.
TASK_REQUESTED = {JobKind.POWER: EventType.POWER_REQUESTED, JobKind.BOOT: EventType.BOOT_REQUESTED}
TASK_ENDED = {
    (kind, status): EventType(f"{kind}.{status}") for kind in JobKind for status in FINISHED
}


class Job(Base):
    __tablename__ = "job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[JobKind] = mapped_column(EnumText(JobKind, 16))
    action: Mapped[str] = mapped_column(String(16))  # power action or boot device
    persistent: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[JobStatus] = mapped_column(EnumText(JobStatus, 16), default=JobStatus.RUNNING)
    targets: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # the selector asked
    total: Mapped[int] = mapped_column(Integer, default=0)
    stagger: Mapped[int | None] = mapped_column(Integer)  # power-ons per second per site
    ticket: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("uq_job_idempotency", "actor_kind", "actor_name", "idempotency_key", unique=True),
    )


class Task(Base):
    __tablename__ = "task"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("device.id", ondelete="SET NULL"))
    device_name: Mapped[str] = mapped_column(String(128))  # kept when the device is deleted
    site_id: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(64))
    # Status reads run beside anything; a change holds the device until it ends.
    exclusive: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[TaskStatus] = mapped_column(EnumText(TaskStatus, 16), default=TaskStatus.QUEUED)
    power_state: Mapped[PowerState | None] = mapped_column(EnumText(PowerState, 16))
    path: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner_id: Mapped[str | None] = mapped_column(String(32))  # the central that runs it
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # One change per device at a time, also between two requests racing each other.
        Index(
            "uq_task_active_device",
            "device_id",
            unique=True,
            sqlite_where=_ACTIVE_SQL,
            postgresql_where=_ACTIVE_SQL,
        ),
        # Whose active tasks are these: the recovery sweep reads only active tasks.
        Index(
            "ix_task_active_owner",
            "owner_id",
            sqlite_where=text(ACTIVE_SQL),
            postgresql_where=text(ACTIVE_SQL),
        ),
    )
