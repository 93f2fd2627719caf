"""Console requests and answers (docs/consoles.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agents.protocol import CloseReason
from app.consoles.models import ConsoleMode, ConsoleStatus, ConsoleVia

Ticket = Annotated[str, StringConstraints(max_length=128, pattern=r"^[^\x00-\x1f]*$")]


class ConsoleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    via: ConsoleVia = ConsoleVia.AUTO
    mode: ConsoleMode = ConsoleMode.RW
    cols: Annotated[int, Field(ge=20, le=500)] = 80
    rows: Annotated[int, Field(ge=5, le=200)] = 25
    ticket: Ticket | None = None
    reason: Annotated[str, StringConstraints(max_length=2000)] | None = None


class Holder(BaseModel):
    """Who holds the write lock, and since when."""

    viewer: str
    name: str
    since: datetime


class ViewerRead(BaseModel):
    viewer: str
    name: str
    since: datetime
    mode: ConsoleMode


class ConsoleRead(BaseModel):
    id: str
    device: str
    site: str
    via: str
    path: str | None
    endpoint: str | None
    status: ConsoleStatus
    message: str
    ticket: str | None
    opened_by: str
    created_at: datetime
    closed_at: datetime | None
    close_reason: CloseReason | None
    recording_sha256: str | None
    recording_bytes: int | None
    stream: str | None  # the WebSocket to attach to, while the session is open
    writer: Holder | None = None
    viewers: list[ViewerRead] = []


class ConsolePage(BaseModel):
    items: list[ConsoleRead]
