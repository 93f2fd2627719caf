"""Jobs: targets resolved and checked, rows and `requested` events written, before any I/O."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from agents.protocol import (
    BootDevice,
    BootOrder,
    PowerAction,
    PowerOrder,
    TaskOrder,
    TaskStatus,
)
from app.audit.models import Outcome
from app.audit.service import stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import InUse, InvalidInput, NotFound
from app.fleetlink.paths import BOOT_PATHS, POWER_PATHS, power_paths
from app.identity.models import Role
from app.inventory.devices import DeviceFilter, device_for, filtered_query
from app.inventory.models import ControlPath, PathKind, Site
from app.jobs.models import ACTIVE, TASK_ENDED, TASK_REQUESTED, Job, JobKind, JobStatus, Task
from app.jobs.schemas import JobRead, Targets, TaskRead
from app.vault import Vault


@dataclass(frozen=True)
class Target:
    device_id: int
    name: str
    site_id: int
    site: str


@dataclass(frozen=True)
class Plan:
    """A job as asked: what to do, to whom, with which guards."""

    kind: JobKind
    action: str  # a PowerAction or a BootDevice
    targets: list[Target]
    asked: dict[str, object]  # the selector and filters, kept on the job
    timeout: float
    persistent: bool = False
    stagger: int | None = None
    idempotency_key: str | None = None
    # Devices picked by a filter that have no power path: their tasks end `skipped`, unsent.
    skipped: frozenset[int] = frozenset()

    @property
    def acting(self) -> list[Target]:
        """The targets that get an order."""
        return [target for target in self.targets if target.device_id not in self.skipped]

    @property
    def exclusive(self) -> bool:
        """Status reads may run beside anything; everything else holds its devices."""
        return not (self.kind is JobKind.POWER and self.action == PowerAction.STATUS)

    def digest(self) -> str:
        """What an Idempotency-Key stands for: the same key must mean the same request."""
        body = [self.kind, self.action, self.persistent, self.stagger, self.asked]
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def needed_role(kind: JobKind, action: str) -> Role:
    return Role.VIEWER if kind is JobKind.POWER and action == PowerAction.STATUS else Role.OPERATOR


async def device_target(
    session: AsyncSession, ctx: RequestContext, ref: str, kind: JobKind, action: str
) -> Target:
    """One device by name or id, refused unless the caller may act on its site."""
    what = f"{kind} {action}"
    device = await device_for(session, ctx, ref, needed_role(kind, action), what)
    site = await session.get(Site, device.site_id)
    assert site is not None
    return Target(device.id, device.name, site.id, site.slug)


async def bulk_targets(
    session: AsyncSession, ctx: RequestContext, asked: Targets, action: PowerAction
) -> list[Target]:
    """Every visible device the selector and filters match; refused if any site is not ours."""
    if asked.select is None and asked.site is None and asked.rack is None and not asked.tags:
        raise InvalidInput(
            "name the targets: give `select` (a node range such as 'web[01-20]') or a site, "
            "rack or tag; a bulk action never means every device"
        )
    flt = DeviceFilter(
        select=asked.select,
        site=asked.site,
        rack=asked.rack,
        kind=asked.kind,
        tags=asked.tags,
        status=asked.status,
        power_state=asked.power_state,
        health=asked.health,
        site_ids=ctx.principal.visible_site_ids(),
    )
    rows = (await session.execute(await filtered_query(session, flt))).all()
    targets = [Target(device.id, device.name, device.site_id, slug) for device, slug, *_ in rows]
    if not targets:
        raise InvalidInput("the selector and filters match no device you can see; check them")
    role = needed_role(JobKind.POWER, action)
    for site_id, slug in sorted({(t.site_id, t.site) for t in targets}):
        ctx.require(role, site_id, what=f"power {action}", site=slug)
    return sorted(targets, key=lambda target: target.name)


async def check_free(session: AsyncSession, ctx: RequestContext, targets: Sequence[Target]) -> None:
    """One change per device at a time: name the job that holds a device, if the caller may
    see it (a job that also touches sites the caller cannot see stays unnamed)."""
    ids = [target.device_id for target in targets]
    for start in range(0, len(ids), 5000):
        busy = (
            await session.execute(
                select(Task.device_name, Task.job_id, Job.action)
                .join(Job, Job.id == Task.job_id)
                .where(
                    Task.device_id.in_(ids[start : start + 5000]),
                    Task.exclusive,
                    Task.status.in_(ACTIVE),
                )
                .limit(5)
            )
        ).all()
        if busy:
            held = []
            for name, job_id, action in busy:
                job = await session.get(Job, job_id)
                seen = job is not None and await _visible(session, ctx, job)
                holder = f"job {job_id}" if seen else "a job you cannot see"
                held.append(f"{name} by {holder} ({action})")
            raise InUse(
                f"busy: {', '.join(held)}; wait for it to finish or cancel it "
                "(POST /api/v1/jobs/ID/cancel)"
            )


async def replay(session: AsyncSession, ctx: RequestContext, plan: Plan) -> Job | None:
    """The job an earlier request with the same Idempotency-Key made, if any.

    Requests with one key take turns until the first commits, so a retry sent while the first
    is still being written gets its job rather than a conflict with it. PostgreSQL: a lock on
    the key for the rest of the transaction; SQLite already has one writer at a time.
    """
    if plan.idempotency_key is None:
        return None
    actor = ctx.principal.actor
    if session.get_bind().dialect.name == "postgresql":
        named = orjson.dumps([actor.kind, actor.name, plan.idempotency_key])
        lock = int.from_bytes(hashlib.sha256(named).digest()[:8], "big", signed=True)
        await session.execute(select(func.pg_advisory_xact_lock(lock)))
    job = await session.scalar(
        select(Job).where(
            Job.actor_kind == actor.kind,
            Job.actor_name == actor.name,
            Job.idempotency_key == plan.idempotency_key,
        )
    )
    if job is not None and job.request_digest != plan.digest():
        raise InvalidInput(
            "this Idempotency-Key was used for a different request; use a new key for a new one"
        )
    return job


async def create_job(
    session: AsyncSession, ctx: RequestContext, plan: Plan, owner: str
) -> tuple[Job, list[int]]:
    """Job and task rows plus a `requested` event per device, in the caller's transaction;
    `owner` is the central that will run the tasks."""
    if plan.exclusive:
        await check_free(session, ctx, plan.targets)
    actor = ctx.principal.actor
    job = Job(
        id=uuid.uuid4().hex,
        kind=plan.kind,
        action=plan.action,
        persistent=plan.persistent,
        status=JobStatus.RUNNING,
        targets=plan.asked,
        total=len(plan.targets),
        stagger=plan.stagger,
        ticket=ctx.ticket,
        reason=ctx.reason,
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_name=actor.name,
        idempotency_key=plan.idempotency_key,
        request_digest=plan.digest() if plan.idempotency_key else None,
    )
    session.add(job)
    await session.flush()
    now = utcnow()
    rows = [
        {
            "job_id": job.id,
            "device_id": target.device_id,
            "device_name": target.name,
            "site_id": target.site_id,
            "site": target.site,
            "exclusive": plan.exclusive,
            "status": TaskStatus.QUEUED,
            "message": "",
            "attempts": 0,
            "finished_at": None,
            "owner_id": owner,
        }
        | (_SKIP_ROW | {"finished_at": now} if target.device_id in plan.skipped else {})
        for target in plan.targets
    ]
    task_ids = list(
        await session.scalars(insert(Task).returning(Task.id, sort_by_parameter_order=True), rows)
    )
    details: dict[str, object] = {"action": plan.action, "timeout": plan.timeout}
    if plan.kind is JobKind.BOOT:
        details["persistent"] = plan.persistent
    if len(plan.targets) > 1:
        details["targets"] = plan.asked
    for target in plan.targets:
        skipped = target.device_id in plan.skipped
        stage(
            session,
            ctx.event(
                TASK_ENDED[plan.kind, TaskStatus.SKIPPED] if skipped else TASK_REQUESTED[plan.kind],
                outcome=Outcome.SKIPPED if skipped else Outcome.SUCCESS,
                target_type="device",
                target_id=target.device_id,
                target_name=target.name,
                site=target.site,
                job_id=job.id,
                details=details,
            ),
        )
    return job, task_ids


async def orders_for(
    session: AsyncSession, vault: Vault, plan: Plan, job: Job, task_ids: Sequence[int]
) -> list[TaskOrder]:
    """The agent's orders, with each device's power paths in priority order, secrets opened."""
    kinds = BOOT_PATHS if plan.kind is JobKind.BOOT else POWER_PATHS
    ids = [target.device_id for target in plan.acting]
    status = plan.kind is JobKind.POWER and plan.action == PowerAction.STATUS
    paths = await power_paths(session, vault, ids, kinds, status=status)
    orders: list[TaskOrder] = []
    for target, task_id in zip(plan.targets, task_ids, strict=True):
        if target.device_id in plan.skipped:
            continue
        found = tuple(paths.get(target.device_id, ()))
        if plan.kind is JobKind.BOOT:
            orders.append(
                BootOrder(
                    str(task_id),
                    target.name,
                    target.site,
                    BootDevice(plan.action),
                    plan.persistent,
                    found,
                    plan.timeout,
                )
            )
        else:
            orders.append(
                PowerOrder(
                    str(task_id),
                    target.name,
                    target.site,
                    PowerAction(plan.action),
                    found,
                    plan.timeout,
                )
            )
    return orders


async def without_power_path(
    session: AsyncSession, targets: Sequence[Target], kinds: Sequence[PathKind] = POWER_PATHS
) -> list[Target]:
    ids = [target.device_id for target in targets]
    having: set[int] = set()
    for start in range(0, len(ids), 5000):
        having.update(
            await session.scalars(
                select(ControlPath.device_id)
                .where(
                    ControlPath.device_id.in_(ids[start : start + 5000]),
                    ControlPath.kind.in_(kinds),
                )
                .distinct()
            )
        )
    return [target for target in targets if target.device_id not in having]


_SKIP_ROW = {
    "status": TaskStatus.SKIPPED,
    "message": "no power path (ipmi, redfish, pdu_outlet or libvirt); picked by a filter, so "
    "skipped",
}


async def get_job(session: AsyncSession, ctx: RequestContext, job_id: str) -> Job:
    """A job the caller may see: their own, or one touching only sites they can see."""
    job = await session.get(Job, job_id[:32])
    if job is None or not await _visible(session, ctx, job):
        raise NotFound(no_job(job_id))
    return job


def no_job(job_id: str) -> str:
    """The answer to a job that does not exist, and to one the caller cannot see."""
    return f"no job {job_id!r}; list jobs with GET /api/v1/jobs"


async def _visible(session: AsyncSession, ctx: RequestContext, job: Job) -> bool:
    sites = ctx.principal.visible_site_ids()
    if sites is None or job.actor_name == ctx.principal.actor.name:
        return True
    outside = await session.scalar(
        select(func.count()).where(Task.job_id == job.id, Task.site_id.not_in(sorted(sites)))
    )
    return not outside


async def job_site_ids(session: AsyncSession, job: Job) -> list[int]:
    return list(await session.scalars(select(Task.site_id).where(Task.job_id == job.id).distinct()))


# Cancelling stops devices at every site the job touches: it takes an operator at each.
CANCEL_ROLE = Role.OPERATOR


async def require_cancel(session: AsyncSession, ctx: RequestContext, job: Job) -> None:
    """Refuse (audited) unless the caller may cancel the job; the route's check."""
    for site_id in await job_site_ids(session, job):
        ctx.require(CANCEL_ROLE, site_id, what="cancelling a job", missing=no_job(job.id))


async def may_cancel(session: AsyncSession, ctx: RequestContext, job: Job) -> bool:
    """Whether `require_cancel` would let the caller through (a page shows the button then)."""
    principal = ctx.principal
    for site_id in await job_site_ids(session, job):
        held = principal.role_at(site_id)
        if held is None or held.rank < CANCEL_ROLE.rank:
            return False
    return True


async def task_counts(session: AsyncSession, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Tasks per status of each job, in one grouped query for a page of jobs."""
    counts: dict[str, dict[str, int]] = {job_id: {} for job_id in job_ids}
    for start in range(0, len(job_ids), 5000):
        rows = await session.execute(
            select(Task.job_id, Task.status, func.count())
            .where(Task.job_id.in_(job_ids[start : start + 5000]))
            .group_by(Task.job_id, Task.status)
        )
        for job_id, status, count in rows:
            counts[job_id][TaskStatus(status).value] = count
    return counts


async def read_jobs(session: AsyncSession, jobs: Sequence[Job]) -> list[JobRead]:
    """A page of jobs without their tasks, their counts in one query (a list, not n + 1)."""
    counts = await task_counts(session, [job.id for job in jobs])
    return [_job_read(job, counts[job.id], None) for job in jobs]


async def read_job(session: AsyncSession, job: Job, *, with_tasks: bool = True) -> JobRead:
    counts = (await task_counts(session, [job.id]))[job.id]
    tasks = None
    if with_tasks:
        tasks = [
            task_read(task)
            for task in await session.scalars(
                select(Task).where(Task.job_id == job.id).order_by(Task.device_name)
            )
        ]
    return _job_read(job, counts, tasks)


# The tasks a person looks at first: those still going (ACTIVE), then those that went wrong.
_WRONG = (TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.LOST)


async def first_tasks(session: AsyncSession, job: Job, *, limit: int) -> list[TaskRead]:
    """At most `limit` of the job's tasks, unfinished first, then failed, then the rest (each
    by device name), picked by the database: a page of a 100,000-device job reads `limit`."""
    rank = case(
        (Task.status.in_(ACTIVE), 0),
        (Task.status.in_(_WRONG), 1),
        else_=2,
    )
    query = (
        select(Task)
        .where(Task.job_id == job.id)
        .order_by(rank, Task.device_name, Task.id)
        .limit(limit)
    )
    return [task_read(task) for task in await session.scalars(query)]


def _job_read(job: Job, counts: dict[str, int], tasks: list[TaskRead] | None) -> JobRead:
    return JobRead(
        id=job.id,
        kind=job.kind,
        action=job.action,
        persistent=job.persistent,
        status=job.status,
        targets=job.targets,
        total=job.total,
        counts=dict(counts),
        stagger=job.stagger,
        ticket=job.ticket,
        reason=job.reason,
        actor=job.actor_name,
        created_at=job.created_at,
        finished_at=job.finished_at,
        tasks=tasks,
    )


def task_read(task: Task) -> TaskRead:
    return TaskRead(
        device=task.device_name,
        site=task.site,
        status=task.status,
        power_state=task.power_state,
        path=task.path,
        message=task.message,
        attempts=task.attempts,
        started_at=task.started_at,
        finished_at=task.finished_at,
    )
