"""HTTP routes of power, boot and jobs: each commits the job before any device is touched."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from agents.protocol import BootDevice, PowerAction
from app.audit.models import EventType
from app.audit.service import check_range
from app.context import RequestContext
from app.deps import SessionDep, own_transactions
from app.errors import NotFound
from app.identity import service as identity
from app.identity.auth import Ctx
from app.identity.principal import Ended
from app.inventory.schemas import Page
from app.jobs import actions, listing, service
from app.jobs.engine import JobEngine
from app.jobs.models import JobKind, JobStatus
from app.jobs.schemas import (
    ActionFields,
    ActionResult,
    BulkPowerRequest,
    DeviceBootRequest,
    DevicePowerRequest,
    DryRun,
    JobRead,
)
from app.uow import unit_of_work

router = APIRouter(tags=["power"])
IdempotencyKey = Annotated[
    str | None, Header(max_length=128, pattern=r"^[\x21-\x7e]+$", alias="Idempotency-Key")
]
Text = Annotated[str | None, Query(max_length=200)]


def _runtime(request: Request) -> actions.Runtime:
    state = request.app.state
    return actions.Runtime(state.write_sessions, state.vault, state.jobs)


def _with_body(ctx: RequestContext, body: ActionFields) -> RequestContext:
    """Ticket and reason may come in the body (ticketing systems) or as headers."""
    return dataclasses.replace(
        ctx, ticket=body.ticket or ctx.ticket, reason=body.reason or ctx.reason
    )


@router.post("/devices/{device}/power")
@own_transactions
async def power_device(
    request: Request,
    response: Response,
    ctx: Ctx,
    device: str,
    body: DevicePowerRequest,
    idempotency_key: IdempotencyKey = None,
) -> ActionResult:
    """Power one device and answer with the result (202 with the job if `wait` runs out)."""
    plan = service.Plan(
        JobKind.POWER, body.action, [], {}, body.timeout, idempotency_key=idempotency_key
    )
    result, done = await actions.act_on_device(
        _runtime(request), _with_body(ctx, body), device, plan, body.wait
    )
    if not done:
        response.status_code = status.HTTP_202_ACCEPTED
    return result


@router.post("/devices/{device}/boot")
@own_transactions
async def boot_device(
    request: Request,
    response: Response,
    ctx: Ctx,
    device: str,
    body: DeviceBootRequest,
    idempotency_key: IdempotencyKey = None,
) -> ActionResult:
    """Set the next (or every, `persistent`) boot device; `bios` stops in BIOS setup."""
    plan = service.Plan(
        JobKind.BOOT,
        body.device,
        [],
        {},
        body.timeout,
        persistent=body.persistent,
        idempotency_key=idempotency_key,
    )
    result, done = await actions.act_on_device(
        _runtime(request), _with_body(ctx, body), device, plan, body.wait
    )
    if not done:
        response.status_code = status.HTTP_202_ACCEPTED
    return result


@router.post(
    "/power",
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"model": DryRun, "description": "dry run: the devices it would act on"}},
)
@own_transactions
async def power_bulk(
    request: Request,
    response: Response,
    ctx: Ctx,
    body: BulkPowerRequest,
    idempotency_key: IdempotencyKey = None,
) -> JobRead | DryRun:
    """Power every device the selector and filters match, as one job (202; follow the job)."""
    answer = await actions.power_many(
        _runtime(request), _with_body(ctx, body), body, idempotency_key
    )
    if isinstance(answer, DryRun):
        response.status_code = status.HTTP_200_OK
    else:
        response.headers["Location"] = f"/api/v1/jobs/{answer.id}"
    return answer


async def _job_filter(
    ticket: Text = None,
    actor: Text = None,
    site: Annotated[str | None, Query(max_length=200, description="site slug or id")] = None,
    device: Annotated[str | None, Query(max_length=200, description="name or id")] = None,
    action: PowerAction | BootDevice | None = None,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> listing.JobFilter:
    """The filters of the job list, named as the audit log's."""
    check_range(since, until)
    return listing.JobFilter(
        ticket=ticket,
        actor=actor,
        site=site,
        device=device,
        action=action,
        status=status_,
        since=since,
        until=until,
    )


@router.get("/jobs", tags=["jobs"])
async def list_jobs(
    session: SessionDep,
    ctx: Ctx,
    flt: Annotated[listing.JobFilter, Depends(_job_filter)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[JobRead]:
    """Newest first, without tasks (`GET /jobs/{id}` has them)."""
    jobs, next_cursor = await listing.list_jobs(session, ctx, flt, limit=limit, cursor=cursor)
    items = await service.read_jobs(session, jobs)
    return Page[JobRead](items=items, next_cursor=next_cursor)


@router.get("/jobs/{job_id}", tags=["jobs"])
async def get_job(
    session: SessionDep,
    ctx: Ctx,
    job_id: str,
    tasks: Annotated[bool, Query(description="false: status and counts only (for polling)")] = True,
) -> JobRead:
    job = await service.get_job(session, ctx, job_id)
    return await service.read_job(session, job, with_tasks=tasks)


@router.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse)
async def job_events(
    request: Request, session: SessionDep, ctx: Ctx, job_id: str
) -> StreamingResponse:
    """Server-Sent Events: the job as it is now, then each task's progress until it ends.

    The caller is checked again every few seconds: a revoked or expired credential, or a job
    no longer visible, ends the stream with a `closed` event saying why.
    """
    job = await service.get_job(session, ctx, job_id)
    engine: JobEngine = request.app.state.jobs
    queue = engine.subscribe(job.id)  # before the snapshot, so no event falls between
    snapshot = await service.read_job(session, job)
    every: float = request.app.state.settings.stream_recheck_seconds

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield _sse("job", snapshot.model_dump(mode="json"))
            due = time.monotonic() + every
            while queue is not None:
                try:
                    event = await asyncio.wait_for(queue.get(), max(due - time.monotonic(), 0))
                except TimeoutError:
                    event = None
                if time.monotonic() >= due:
                    ended = await _recheck(request, ctx, job.id)
                    if ended is not None:
                        yield _sse("closed", ended)
                        return
                    due = time.monotonic() + every
                if event is not None:
                    yield _sse(event["event"], event["data"])
                    if event["event"] == "job":
                        return
        finally:
            if queue is not None:
                engine.unsubscribe(job.id, queue)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


async def _recheck(request: Request, ctx: RequestContext, job_id: str) -> dict[str, str] | None:
    """Why the stream must end now (credential ended, job out of sight), or None."""
    async with unit_of_work(request.app.state.sessions) as session:
        found = await identity.refresh(session, ctx.principal)
        if isinstance(found, Ended):
            return {"reason": found, "error": "Unauthenticated", "detail": f"{found}: log in again"}
        try:
            await service.get_job(session, dataclasses.replace(ctx, principal=found), job_id)
        except NotFound as exc:
            return {"reason": Ended.ACCESS_WITHDRAWN, "error": "NotFound", "detail": str(exc)}
    return None


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
@own_transactions
async def cancel_job(request: Request, session: SessionDep, ctx: Ctx, job_id: str) -> JobRead:
    """Stop the job's unfinished tasks; finished ones keep their results."""
    job = await service.get_job(session, ctx, job_id)
    await service.require_cancel(session, ctx, job)
    done = await request.app.state.jobs.cancel(job.id)
    await request.app.state.audit.record(
        ctx.event(EventType.JOB_CANCELLED, job_id=job.id, details=dataclasses.asdict(done))
    )
    await session.commit()  # a new snapshot: SQLite's read began before the cancel wrote
    await session.refresh(job)
    return await service.read_job(session, job)
