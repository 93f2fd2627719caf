"""A guest as its hypervisor last described it: the domain behind a `vm` device."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class Guest(Base):
    """Keyed by the domain's UUID, which survives renames and migrations between hosts; the
    host it runs on is the device's `parent`. Written by syncs only."""

    __tablename__ = "guest"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True
    )
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    domain: Mapped[str] = mapped_column(String(128))  # its name on the host
    state: Mapped[str] = mapped_column(String(32))  # the hypervisor's word, e.g. "shut off"
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    autostart: Mapped[bool] = mapped_column(Boolean)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the last sync that listed it
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # its host's sync did not
