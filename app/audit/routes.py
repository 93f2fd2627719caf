"""HTTP routes of the audit log: read, verify, export. Nothing here edits or deletes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from app.audit import export as audit_export
from app.audit import service
from app.audit.export import AuditFormat
from app.audit.models import Outcome
from app.audit.schemas import AuditEventRead, BadEvent, VerifyResult
from app.deps import SessionDep
from app.exports import ExportSlot
from app.identity.auth import Ctx
from app.identity.models import Role
from app.inventory.schemas import Page
from app.paging import decode_cursor, encode_cursor

router = APIRouter()
Text = Annotated[str | None, Query(max_length=200)]


async def _filter(
    session: SessionDep,
    ctx: Ctx,
    actor: Text = None,
    device: Text = None,
    site: Text = None,
    ticket: Text = None,
    type: Annotated[
        str | None, Query(max_length=64, description="e.g. `device.updated` or `auth.*`")
    ] = None,
    outcome: Outcome | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> service.AuditFilter:
    return await service.audit_filter(
        session,
        ctx,
        actor=actor,
        device=device,
        site=site,
        ticket=ticket,
        type=type,
        outcome=outcome,
        since=since,
        until=until,
    )


FilterDep = Annotated[service.AuditFilter, Depends(_filter)]


@router.get("/audit", tags=["audit"])
async def list_audit(
    session: SessionDep,
    flt: FilterDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Page[AuditEventRead]:
    """Newest first."""
    before = None
    if cursor is not None:
        (before,) = decode_cursor(cursor, int)
    events, last = await service.list_events(session, flt, limit=limit, before=before)
    return Page[AuditEventRead](
        items=[AuditEventRead.model_validate(event) for event in events],
        next_cursor=encode_cursor([last]) if last is not None else None,
    )


@router.get("/audit/verify", tags=["audit"])
async def verify_audit(session: SessionDep, ctx: Ctx) -> VerifyResult:
    """Walk the whole chain; name the first event that does not match."""
    ctx.require(Role.ADMIN, None, what="verifying the audit chain")
    verdict = await service.verify(session)
    bad = (
        None
        if verdict.ok
        else BadEvent(id=verdict.bad_id, seq=verdict.bad_seq, reason=verdict.reason)
    )
    return VerifyResult(ok=verdict.ok, checked=verdict.checked, first_bad=bad)


@router.get(
    "/audit/export",
    tags=["audit"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
)
async def export_audit(
    request: Request, flt: FilterDep, export: ExportSlot, format: AuditFormat = AuditFormat.JSONL
) -> StreamingResponse:
    """Oldest first, with each event's hash, for archiving outside Rackhand: the events up to
    the newest when the export began. Too many exports at once: 429 with Retry-After."""
    body = audit_export.lines(request.app.state.sessions, flt, format)
    return export.response(body, format.media_type, f"audit.{format}")
