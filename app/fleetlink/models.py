"""A site's enrolled agent: its one-time join token, its own credential, and its link's state."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class AgentStatus(StrEnum):
    PENDING = "pending"  # enrolled; the join token has not been traded yet
    ONLINE = "online"
    OFFLINE = "offline"
    REVOKED = "revoked"


class SiteAgent(Base):
    """Secrets are stored as SHA-256 digests (256-bit random values: no slow hash needed).

    The link's state (`central_id`, `connected_since`, `last_seen`, counts) is written by the
    central that holds the link, so every central (and the API) reads one answer.
    """

    __tablename__ = "site_agent"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    join_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    join_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    credential_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(64))
    central_id: Mapped[str | None] = mapped_column(String(32))
    connected_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tasks: Mapped[int] = mapped_column(Integer, default=0)
    consoles: Mapped[int] = mapped_column(Integer, default=0)
