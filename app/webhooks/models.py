"""A webhook is a receiver's URL and secret; a delivery is one event owed to it (the outbox)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, EnumText, JSONType, UTCDateTime, utcnow


class WebhookEvent(StrEnum):
    JOB_FINISHED = "job.finished"
    CONSOLE_CLOSED = "console.closed"
    DEVICE_HEALTH_CHANGED = "device.health_changed"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due at `next_attempt_at` (or being sent now)
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed, or the webhook was switched off


class Webhook(Base):
    __tablename__ = "webhook"

    id: Mapped[int] = mapped_column(primary_key=True)
    # As shown to admins and in the audit: query values read `***` (they may hold a token).
    url: Mapped[str] = mapped_column(Text)
    url_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)  # the URL delivery uses
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    all_sites: Mapped[bool] = mapped_column(Boolean)  # else only the sites in webhook_site
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebhookSite(Base):
    """A site in a webhook's scope (a deleted site leaves the scope; it never widens it)."""

    __tablename__ = "webhook_site"

    webhook_id: Mapped[int] = mapped_column(
        ForeignKey("webhook.id", ondelete="CASCADE"), primary_key=True
    )
    site_id: Mapped[int] = mapped_column(
        ForeignKey("site.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Delivery(Base):
    __tablename__ = "webhook_delivery"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhook.id", ondelete="CASCADE"))
    event: Mapped[WebhookEvent] = mapped_column(EnumText(WebhookEvent, 32))
    subject: Mapped[str] = mapped_column(String(64))  # the job's or console session's id
    payload: Mapped[str] = mapped_column(Text)  # the exact body sent, signed as is
    status: Mapped[DeliveryStatus] = mapped_column(
        EnumText(DeliveryStatus, 16), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the next attempt is due; while one is under way, when its lease runs out.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    redelivery_of: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_webhook_created", "webhook_id", "created_at"),
    )
