"""Shapes of the audit API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    seq: int
    at: datetime
    type: str
    outcome: str
    actor_kind: str
    actor_id: int | None
    actor_name: str
    source_ip: str | None
    target_type: str | None
    target_id: int | None
    target_name: str | None
    site: str | None
    ticket: str | None
    reason: str | None
    request_id: str | None
    job_id: str | None
    session_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class BadEvent(BaseModel):
    id: int | None
    seq: int | None
    reason: str


class VerifyResult(BaseModel):
    ok: bool
    checked: int
    first_bad: BadEvent | None = None
