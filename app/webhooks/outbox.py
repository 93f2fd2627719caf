"""The outbox: deliveries written in the transaction of the event that causes them.

Hook points (one call each): `app.jobs.engine` calls `jobs_finished` where jobs reach their
final status, `app.consoles.service` calls `console_closed` where a session is sealed,
`app.health.service` calls `health_changed` where a device's verdict changes. A
delivery goes to every active webhook subscribed to the event whose scope covers every site
the event touches (a job over two sites reaches only webhooks covering both), so a webhook
never learns of a device outside its sites. The sender (`sender.py`) sends what is committed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.consoles.models import ConsoleSession
from app.db import utcnow
from app.jobs import service as jobs
from app.jobs.models import Job, Task
from app.webhooks.models import Webhook, WebhookEvent, WebhookSite
from app.webhooks.service import new_delivery


async def _subscribers(
    session: AsyncSession, event: WebhookEvent
) -> list[tuple[int, set[int] | None]]:
    """(webhook id, its site ids or None for every site) of active webhooks taking `event`."""
    hooks = [
        (webhook_id, all_sites)
        for webhook_id, all_sites, events in await session.execute(
            select(Webhook.id, Webhook.all_sites, Webhook.events).where(Webhook.active)
        )
        if event.value in events
    ]
    if not hooks:
        return []
    scoped = [webhook_id for webhook_id, all_sites in hooks if not all_sites]
    sites: dict[int, set[int]] = {webhook_id: set() for webhook_id in scoped}
    if scoped:
        for webhook_id, site_id in await session.execute(
            select(WebhookSite.webhook_id, WebhookSite.site_id).where(
                WebhookSite.webhook_id.in_(scoped)
            )
        ):
            sites[webhook_id].add(site_id)
    return [
        (webhook_id, None if all_sites else sites[webhook_id]) for webhook_id, all_sites in hooks
    ]


def _covering(hooks: list[tuple[int, set[int] | None]], touched: set[int]) -> list[int]:
    return [webhook_id for webhook_id, sites in hooks if sites is None or touched <= sites]


def _body(event: WebhookEvent, key: str, value: object) -> str:
    at = utcnow().isoformat()
    return orjson.dumps({"event": event.value, "at": at, key: value}).decode()


async def jobs_finished(session: AsyncSession, job_ids: Collection[str]) -> int:
    """`job.finished` for jobs that just reached their final status; the number of deliveries."""
    if not job_ids:
        return 0
    hooks = await _subscribers(session, WebhookEvent.JOB_FINISHED)
    if not hooks:
        return 0
    count = 0
    for job_id in sorted(job_ids):
        job = await session.scalar(
            select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
        )
        if job is None:
            continue
        touched = set(
            await session.scalars(select(Task.site_id).where(Task.job_id == job_id).distinct())
        )
        targets = _covering(hooks, touched)
        if not targets:
            continue
        read = await jobs.read_job(session, job)
        payload = _body(WebhookEvent.JOB_FINISHED, "job", read.model_dump(mode="json"))
        for webhook_id in targets:
            session.add(new_delivery(webhook_id, WebhookEvent.JOB_FINISHED, job.id, payload))
            count += 1
    await session.flush()
    return count


async def console_closed(session: AsyncSession, row: ConsoleSession) -> int:
    """`console.closed` for a session just sealed (closed, failed to open, or lost)."""
    hooks = await _subscribers(session, WebhookEvent.CONSOLE_CLOSED)
    targets = _covering(hooks, {row.site_id})
    if not targets:
        return 0
    console = {
        "id": row.id,
        "device": row.device_name,
        "site": row.site,
        "status": row.status.value,
        "path": row.path,
        "close_reason": row.close_reason,
        "message": row.message,
        "ticket": row.ticket,
        "reason": row.reason,
        "opened_by": row.actor_name,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "closed_at": row.closed_at.isoformat() if row.closed_at else None,
        "recording_sha256": row.recording_sha256,
        "recording_bytes": row.recording_bytes,
        "bytes_out": row.bytes_out,
        "bytes_in": row.bytes_in,
    }
    payload = _body(WebhookEvent.CONSOLE_CLOSED, "console", console)
    for webhook_id in targets:
        session.add(new_delivery(webhook_id, WebhookEvent.CONSOLE_CLOSED, row.id, payload))
    await session.flush()
    return len(targets)


@dataclass(frozen=True)
class HealthChange:
    """A device's verdict on its sensors, before and after (docs/health.md, "Verdicts")."""

    device_id: int
    device: str
    site_id: int
    site: str
    before: str
    after: str
    reasons: list[str]
    message: str  # why `unknown`
    at: datetime


async def health_changed(session: AsyncSession, changes: Sequence[HealthChange]) -> int:
    """`device.health_changed` to the webhooks covering each device's site; the number of
    deliveries (the subscribers are read once for the whole batch)."""
    if not changes:
        return 0
    hooks = await _subscribers(session, WebhookEvent.DEVICE_HEALTH_CHANGED)
    count = 0
    for change in changes:
        targets = _covering(hooks, {change.site_id})
        if not targets:
            continue
        body = asdict(change) | {"at": change.at.isoformat()}
        del body["site_id"]
        payload = _body(WebhookEvent.DEVICE_HEALTH_CHANGED, "health", body)
        for webhook_id in targets:
            session.add(
                new_delivery(
                    webhook_id, WebhookEvent.DEVICE_HEALTH_CHANGED, str(change.device_id), payload
                )
            )
            count += 1
    return count
