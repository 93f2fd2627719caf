"""HTTP routes of power, boot and jobs: each commits the job before any device is touched."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from agents.protocol import PowerAction, TaskStatus
from app.context import RequestContext
from app.deps import SessionDep, own_transactions
from app.errors import InvalidInput
from app.identity.auth import Ctx
from app.identity.models import Role
from app.inventory.models import Site
from app.jobs import service
from app.jobs.engine import JobEngine
from app.jobs.models import JobKind
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
DESTRUCTIVE = frozenset({PowerAction.OFF, PowerAction.SOFT, PowerAction.CYCLE, PowerAction.RESET,
                         PowerAction.NMI})  # fmt: skip


def _engine(request: Request) -> JobEngine:
    engine: JobEngine = request.app.state.jobs
    return engine


def _with_body(ctx: RequestContext, body: ActionFields) -> RequestContext:
    """Ticket and reason may come in the body (ticketing systems) or as headers."""
    return dataclasses.replace(
        ctx, ticket=body.ticket or ctx.ticket, reason=body.reason or ctx.reason
    )


async def _site_policy(session: Any, ctx: RequestContext, site_ids: set[int], what: str) -> None:
    for site_id in sorted(site_ids):
        site = await session.get(Site, site_id)
        if site is not None:
            ctx.require_ticket(site.slug, site.require_ticket, what)


async def _single(
    request: Request, ctx: RequestContext, plan: service.Plan, ref: str, wait: float
) -> tuple[ActionResult, bool]:
    """Create, launch and wait for a one-device job; False when the wait ran out first."""
    engine = _engine(request)
    async with unit_of_work(request.app.state.write_sessions) as session:
        target = await service.device_target(session, ctx, ref, plan.kind, plan.action)
        plan = dataclasses.replace(plan, targets=[target], asked={"device": target.name})
        if plan.kind is JobKind.BOOT or PowerAction(plan.action) in DESTRUCTIVE:
            await _site_policy(session, ctx, {target.site_id}, f"{plan.kind} {plan.action}")
        if await service.without_power_path(session, [target]):
            raise InvalidInput(
                f"{target.name} has no power path; add an ipmi or redfish control path "
                f"(POST /api/v1/devices/{target.name}/paths)"
            )
        job = await service.replay(session, ctx, plan)
        if job is not None:
            read = await service.read_job(session, job)
            assert read.tasks
            task = read.tasks[0]
            return (
                ActionResult(
                    device=task.device,
                    action=job.action,
                    status=task.status,
                    power_state=task.power_state,
                    path=task.path,
                    message=task.message,
                    job=job.id,
                ),
                task.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING),
            )
        job, task_ids = await service.create_job(session, ctx, plan)
        orders = await service.orders_for(session, request.app.state.vault, plan, job, task_ids)
    task_id = str(task_ids[0])
    waiter = engine.waiter(task_id)
    engine.launch(ctx, job, orders)
    try:
        report = await asyncio.wait_for(asyncio.shield(waiter), wait)
    except TimeoutError:
        engine.forget(task_id, waiter)
        message = f"still running after {wait:g} s; follow GET /api/v1/jobs/{job.id}"
        return (
            ActionResult(
                device=target.name,
                action=plan.action,
                status=TaskStatus.RUNNING,
                power_state=None,
                path=None,
                message=message,
                job=job.id,
            ),
            False,
        )
    return (
        ActionResult(
            device=target.name,
            action=plan.action,
            status=report.status,
            power_state=report.power_state,
            path=report.path,
            message=report.message,
            job=job.id,
        ),
        True,
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
    result, done = await _single(request, _with_body(ctx, body), plan, device, body.wait)
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
    result, done = await _single(request, _with_body(ctx, body), plan, device, body.wait)
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
    ctx = _with_body(ctx, body)
    asked = body.model_dump(
        include={"select", "site", "rack", "kind", "tags", "status", "power_state"},
        exclude_defaults=True,
        mode="json",
    )
    async with unit_of_work(request.app.state.write_sessions) as session:
        targets = await service.bulk_targets(session, ctx, body, body.action)
        if body.max_targets is not None and len(targets) > body.max_targets:
            raise InvalidInput(
                f"the selector matches {len(targets)} devices, more than max_targets "
                f"{body.max_targets}; narrow it or raise max_targets"
            )
        if body.dry_run:
            response.status_code = status.HTTP_200_OK
            return DryRun(
                action=body.action,
                total=len(targets),
                devices=[target.name for target in targets],
                without_power_path=await service.without_power_path(session, targets),
            )
        if body.action in DESTRUCTIVE:
            await _site_policy(
                session, ctx, {target.site_id for target in targets}, f"power {body.action}"
            )
        plan = service.Plan(
            JobKind.POWER,
            body.action,
            targets,
            asked,
            body.timeout,
            stagger=body.stagger,
            idempotency_key=idempotency_key,
        )
        job = await service.replay(session, ctx, plan)
        if job is not None:
            return await service.read_job(session, job, with_tasks=False)
        job, task_ids = await service.create_job(session, ctx, plan)
        orders = await service.orders_for(session, request.app.state.vault, plan, job, task_ids)
        read = await service.read_job(session, job, with_tasks=False)
    _engine(request).launch(ctx, job, orders)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return read


@router.get("/jobs", tags=["jobs"])
async def list_jobs(
    session: SessionDep,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(max_length=32, description="last job id seen")] = None,
) -> list[JobRead]:
    jobs = await service.list_jobs(session, ctx, limit=limit, before=before)
    return [await service.read_job(session, job, with_tasks=False) for job in jobs]


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
    """Server-Sent Events: the job as it is now, then each task's progress until it ends."""
    job = await service.get_job(session, ctx, job_id)
    engine = _engine(request)
    queue = engine.subscribe(job.id)  # before the snapshot, so no event falls between
    snapshot = await service.read_job(session, job)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield _sse("job", snapshot.model_dump(mode="json"))
            while queue is not None:
                event = await queue.get()
                yield _sse(event["event"], event["data"])
                if event["event"] == "job":
                    return
        finally:
            if queue is not None:
                engine.unsubscribe(job.id, queue)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
@own_transactions
async def cancel_job(request: Request, session: SessionDep, ctx: Ctx, job_id: str) -> JobRead:
    """Stop the job's unfinished tasks; finished ones keep their results."""
    job = await service.get_job(session, ctx, job_id)
    for site_id in await service.job_site_ids(session, job):
        ctx.require(Role.OPERATOR, site_id, what="cancelling a job")
    stopped = await _engine(request).cancel(job.id)
    await request.app.state.audit.record(
        ctx.event("job.cancelled", job_id=job.id, details={"stopped": stopped})
    )
    return await service.read_job(session, job)
