"""A running central process, as its peers see it: alive while its heartbeat is fresh."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class Central(Base):
    __tablename__ = "central"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # new at every start
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Each central says how often it beats, so peers judge it by its own pace, not theirs.
    interval_seconds: Mapped[float] = mapped_column(Float)
