"""The job list: the filters of `GET /jobs`, who sees which job, and cursor paging."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, distinct, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.context import RequestContext
from app.errors import ForgedCursor, NotFound
from app.inventory.devices import get_device
from app.inventory.sites import get_site
from app.jobs.models import Job, JobStatus, Task
from app.paging import decode_cursor, encode_cursor


@dataclass
class JobFilter:
    """All given filters must match; `site` and `device` match any of the job's tasks."""

    ticket: str | None = None
    actor: str | None = None
    site: str | None = None
    device: str | None = None
    action: str | None = None  # a PowerAction or a BootDevice
    status: JobStatus | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_jobs(
    session: AsyncSession,
    ctx: RequestContext,
    flt: JobFilter,
    *,
    limit: int,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """Newest first, and the cursor of the next page; a site-scoped caller sees the jobs that
    stayed inside their sites."""
    query = select(Job)
    sites = ctx.principal.visible_site_ids()
    if sites is not None:
        outside = select(Task.id).where(Task.job_id == Job.id, Task.site_id.not_in(sorted(sites)))
        query = query.where(~outside.exists())
    for condition in await _conditions(session, ctx, flt):
        query = query.where(condition)
    if cursor is not None:
        at, job_id = _after(cursor)
        query = query.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < job_id)))
    order = (Job.created_at.desc(), Job.id.desc())
    jobs = list(await session.scalars(query.order_by(*order).limit(limit + 1)))
    if len(jobs) <= limit:
        return jobs, None
    last = jobs[limit - 1]
    return jobs[:limit], encode_cursor([last.created_at.isoformat(), last.id])


async def running_per_site(session: AsyncSession, ctx: RequestContext) -> Counter[int]:
    """Running jobs per site id, counted as `GET /jobs?site=…&status=running` lists them: a job
    counts at every site it has a task at, and a site-scoped caller counts only the jobs that
    stayed inside their sites. One GROUP BY, for the overview."""
    query = (
        select(Task.site_id, func.count(distinct(Job.id)))
        .join(Job, Job.id == Task.job_id)
        .where(Job.status == JobStatus.RUNNING)
        .group_by(Task.site_id)
    )
    sites = ctx.principal.visible_site_ids()
    if sites is not None:
        other = aliased(Task)
        outside = select(other.id).where(
            other.job_id == Job.id, other.site_id.not_in(sorted(sites))
        )
        query = query.where(Task.site_id.in_(sorted(sites)), ~outside.exists())
    counts: Counter[int] = Counter()
    for site_id, count in await session.execute(query):
        counts[site_id] = count
    return counts


async def _conditions(
    session: AsyncSession, ctx: RequestContext, flt: JobFilter
) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if flt.ticket is not None:
        found.append(Job.ticket == flt.ticket)
    if flt.actor is not None:
        found.append(Job.actor_name == flt.actor)
    if flt.action is not None:
        found.append(Job.action == flt.action)
    if flt.status is not None:
        found.append(Job.status == flt.status)
    if flt.since is not None:
        found.append(Job.created_at >= flt.since)
    if flt.until is not None:
        found.append(Job.created_at < flt.until)
    if flt.site is not None:
        found.append(_touching(await _site_tasks(session, ctx, flt.site)))
    if flt.device is not None:
        found.append(_touching(await _device_tasks(session, ctx, flt.device)))
    return found


def _touching(tasks: ColumnElement[bool]) -> ColumnElement[bool]:
    return select(Task.id).where(Task.job_id == Job.id, tasks).exists()


async def _site_tasks(session: AsyncSession, ctx: RequestContext, ref: str) -> ColumnElement[bool]:
    """Tasks at the site (slug or id); a deleted site's jobs are found by the slug they kept.
    A site the caller cannot see reads as unknown, as everywhere."""
    try:
        site = await get_site(session, ref, ctx.principal.visible_site_ids())
    except NotFound:
        if await _kept(session, ctx, Task.site == ref):
            return Task.site == ref
        raise
    return Task.site_id == site.id


async def _device_tasks(
    session: AsyncSession, ctx: RequestContext, ref: str
) -> ColumnElement[bool]:
    """Tasks on the device (name or id; renamed since, too); a deleted device's jobs are found
    by the name they kept. A device the caller cannot see reads as unknown."""
    try:
        device = await get_device(session, ref, ctx.principal.visible_site_ids())
    except NotFound:
        if await _kept(session, ctx, Task.device_name == ref):
            return Task.device_name == ref
        raise
    return Task.device_id == device.id


async def _kept(session: AsyncSession, ctx: RequestContext, tasks: ColumnElement[bool]) -> bool:
    """Whether a task the caller may see matches (the history of deleted sites and devices)."""
    query = select(Task.id).where(tasks)
    sites = ctx.principal.visible_site_ids()
    if sites is not None:
        query = query.where(Task.site_id.in_(sorted(sites)))
    return await session.scalar(query.limit(1)) is not None


def _after(cursor: str) -> tuple[datetime, str]:
    at, job_id = decode_cursor(cursor, str, str)
    try:
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("no time zone")
        return moment.astimezone(UTC), job_id
    except (ValueError, OverflowError):
        raise ForgedCursor() from None
