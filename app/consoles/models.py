"""A console session: one device session held by an agent, watched by any number of viewers."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from agents.protocol import CloseReason
from app.db import Base, EnumText, UTCDateTime, status_in, utcnow


class ConsoleStatus(StrEnum):
    OPENING = "opening"
    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"  # never opened: the message says why


class ConsoleVia(StrEnum):
    """The console path a session asks for: `auto` tries the device's console paths in order."""

    AUTO = "auto"
    IPMI = "ipmi"
    CONSOLE_PORT = "console_port"
    LIBVIRT = "libvirt"  # a guest's serial console, through its hypervisor


class ConsoleMode(StrEnum):
    """How a viewer joins: `rw` may take the keyboard, `ro` only watches."""

    RW = "rw"
    RO = "ro"


LIVE = (ConsoleStatus.OPENING, ConsoleStatus.OPEN)
LIVE_SQL = status_in(LIVE)  # as text, for the partial index below


class ConsoleSession(Base):
    __tablename__ = "console_session"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("device.id", ondelete="SET NULL"), index=True
    )
    device_name: Mapped[str] = mapped_column(String(128))  # kept when the device is deleted
    site_id: Mapped[int] = mapped_column(Integer, index=True)
    site: Mapped[str] = mapped_column(String(64))
    via: Mapped[str] = mapped_column(String(16))  # what was asked: auto, ipmi, console_port
    path: Mapped[str | None] = mapped_column(String(16))  # the path that connected
    endpoint: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[ConsoleStatus] = mapped_column(
        EnumText(ConsoleStatus, 16), default=ConsoleStatus.OPENING
    )
    message: Mapped[str] = mapped_column(Text, default="")
    ticket: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    close_reason: Mapped[CloseReason | None] = mapped_column(EnumText(CloseReason, 32))
    recording: Mapped[str | None] = mapped_column(String(255))  # relative to the data folder
    recording_sha256: Mapped[str | None] = mapped_column(String(64))
    recording_bytes: Mapped[int | None] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)  # device → viewers
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)  # writer → device
    owner_id: Mapped[str | None] = mapped_column(String(32))  # the central that holds it

    __table_args__ = (
        Index(
            "ix_console_session_live_owner",
            "owner_id",
            sqlite_where=text(LIVE_SQL),
            postgresql_where=text(LIVE_SQL),
        ),
    )
