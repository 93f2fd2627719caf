"""The central's side of running jobs: orders out to the agent, reports back into the database.

Reports from thousands of devices arrive at once, so they are written in batches: every
report that arrives while one batch commits joins the next (the group commit of the audit
recorder, for the same reason). A batch updates the tasks, the devices' power state and the
audit (one outcome event per device), then wakes whoever waits on those tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agents.protocol import FINISHED, Order, PowerAction, PowerOrder, Report, TaskStatus
from app.audit.service import Actor, Event, stage
from app.context import RequestContext
from app.db import utcnow
from app.inventory.models import PowerStatus
from app.jobs.models import ACTIVE, Job, JobStatus, Task
from app.uow import unit_of_work
from app.webhooks import outbox

log = logging.getLogger(__name__)

_STARTS = frozenset({PowerAction.ON, PowerAction.CYCLE})  # what `stagger` paces
_MAX_BATCH = 2000

# A Core UPDATE run once per row (executemany): the ORM's bulk update by primary key collects
# each row's changes in Python first, which took a third of the server's CPU on a 1,000-task job.
_TASKS = cast(Table, Task.__table__)
_FINISH_TASK = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("task_id"))
    .values({name: bindparam(name) for name in
             ("status", "power_state", "path", "message", "attempts", "finished_at")})
)  # fmt: skip


class AgentLink(Protocol):
    """How the central hands orders to an agent (built-in or remote)."""

    def submit(self, order: Order) -> None: ...

    def cancel(self, task_id: str) -> bool: ...


@dataclass(frozen=True)
class _Live:
    """What the outcome event needs to know about a task that is running."""

    job_id: str
    kind: str
    action: str
    device: str
    site: str
    actor: Actor
    ticket: str | None
    reason: str | None
    source_ip: str | None
    request_id: str | None


@dataclass
class _Job:
    task_ids: frozenset[str]  # ids only: orders carry opened secrets, kept no longer than sent
    unsent: set[str]
    cancelled: bool = False
    listeners: list[asyncio.Queue[dict[str, Any]]] = field(default_factory=list)


class Pacer:
    """At most `rate` starts per second per site, shared by every job (breakers trip)."""

    def __init__(self) -> None:
        self._next: dict[str, float] = defaultdict(float)

    async def slot(self, site: str, rate: int) -> None:
        now = time.monotonic()
        at = max(now, self._next[site])
        self._next[site] = at + 1 / rate
        if at > now:
            await asyncio.sleep(at - now)


class JobEngine:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._link: AgentLink | None = None
        self._live: dict[str, _Live] = {}
        self._jobs: dict[str, _Job] = {}
        self._waiters: dict[str, list[asyncio.Future[Report]]] = defaultdict(list)
        self._pending: list[Report] = []
        self._flusher: asyncio.Task[None] | None = None
        self._dispatchers: set[asyncio.Task[None]] = set()
        self._pacer = Pacer()

    def attach(self, link: AgentLink) -> None:
        self._link = link

    # Orders out --------------------------------------------------------------------------

    def launch(self, ctx: RequestContext, job: Job, orders: Sequence[Order]) -> None:
        """Hand the job's orders to the agent (paced by `stagger`); the rows are committed."""
        ids = frozenset(order.task_id for order in orders)
        state = _Job(task_ids=ids, unsent=set(ids))
        self._jobs[job.id] = state
        for order in orders:
            self._live[order.task_id] = _Live(
                job_id=job.id,
                kind=job.kind.value,
                action=job.action,
                device=order.device,
                site=order.site,
                actor=ctx.principal.actor,
                ticket=job.ticket,
                reason=job.reason,
                source_ip=ctx.source_ip,
                request_id=ctx.request_id,
            )
        by_site: dict[str, list[Order]] = defaultdict(list)
        for order in orders:
            by_site[order.site].append(order)
        for site_orders in by_site.values():
            task = asyncio.create_task(self._dispatch(job.id, job.stagger, site_orders))
            self._dispatchers.add(task)
            task.add_done_callback(self._dispatchers.discard)

    async def _dispatch(self, job_id: str, stagger: int | None, orders: list[Order]) -> None:
        state = self._jobs[job_id]
        for order in orders:
            if state.cancelled:
                return
            if stagger and isinstance(order, PowerOrder) and order.action in _STARTS:
                await self._pacer.slot(order.site, stagger)
                if state.cancelled:
                    return
            state.unsent.discard(order.task_id)
            if self._link is None:
                self.report(
                    Report(order.task_id, TaskStatus.FAILED, message="no agent serves site")
                )
            else:
                self._link.submit(order)

    async def cancel(self, job_id: str) -> int:
        """Stop what has not finished: unsent tasks end at once, sent ones when the agent stops."""
        state = self._jobs.get(job_id)
        if state is None:
            return 0
        state.cancelled = True
        for task_id in list(state.unsent):
            self.report(
                Report(task_id, TaskStatus.CANCELLED, message="cancelled before it was sent")
            )
        stopped = len(state.unsent)
        state.unsent.clear()
        if self._link is not None:
            for task_id in state.task_ids:
                if task_id in self._live and self._link.cancel(task_id):
                    stopped += 1
        return stopped

    # Reports in --------------------------------------------------------------------------

    def report(self, report: Report) -> None:
        """The agent's sink: queue the report; it is written with the next batch."""
        self._pending.append(report)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="job-reports")

    async def sink(self, report: Report) -> None:
        self.report(report)

    async def _flush(self) -> None:
        failures = 0
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            try:
                finished_jobs = await self._write(batch)
            except Exception:
                failures += 1
                log.exception("writing %d task reports failed (try %d)", len(batch), failures)
                if failures < 3:  # the database may be back in a moment: keep the order
                    self._pending[:0] = batch
                    await asyncio.sleep(failures)
                    continue
                finished_jobs = {}  # still wake the waiters: the result is not lost to them
            failures = 0
            self._announce(batch, finished_jobs)

    async def _write(self, batch: list[Report]) -> dict[str, JobStatus]:
        now = utcnow()
        started = [r.task_id for r in batch if r.status is TaskStatus.RUNNING]
        final = [r for r in batch if r.status in FINISHED]
        async with unit_of_work(self._sessions) as session:
            if started:
                await session.execute(
                    update(Task)
                    .where(Task.id.in_([int(t) for t in started]), Task.status == "queued")
                    .values(status=TaskStatus.RUNNING, started_at=now)
                )
            if not final:
                return {}
            await session.execute(
                _FINISH_TASK,
                [
                    {
                        "task_id": int(r.task_id),
                        "status": r.status,
                        "power_state": r.power_state,
                        "path": r.path,
                        "message": r.message,
                        "attempts": r.attempts,
                        "finished_at": now,
                    }
                    for r in final
                ],
            )
            device_ids = dict(
                (
                    await session.execute(
                        select(Task.id, Task.device_id).where(
                            Task.id.in_([int(r.task_id) for r in final])
                        )
                    )
                ).all()
            )
            await _note_power(session, final, device_ids, now)
            for report in final:
                live = self._live.get(report.task_id)
                if live is not None:
                    stage(
                        session, _outcome_event(live, report, device_ids.get(int(report.task_id)))
                    )
            return await self._finish_jobs(
                session,
                {self._live[r.task_id].job_id for r in final if r.task_id in self._live},
                now,
            )

    async def _finish_jobs(
        self, session: AsyncSession, job_ids: set[str], now: Any
    ) -> dict[str, JobStatus]:
        finished: dict[str, JobStatus] = {}
        for job_id in job_ids:
            counts = Counter(
                dict(
                    (
                        await session.execute(
                            select(Task.status, func.count())
                            .where(Task.job_id == job_id)
                            .group_by(Task.status)
                        )
                    ).all()
                )
            )
            if any(counts[status] for status in ACTIVE):
                continue
            state = self._jobs.get(job_id)
            status = _job_status(counts, cancelled=bool(state and state.cancelled))
            await session.execute(
                update(Job).where(Job.id == job_id).values(status=status, finished_at=now)
            )
            finished[job_id] = status
        await outbox.jobs_finished(session, finished)  # webhooks, in this transaction
        return finished

    def _announce(self, batch: list[Report], finished_jobs: dict[str, JobStatus]) -> None:
        for report in batch:
            live = self._live.get(report.task_id)
            if live is None:
                continue
            state = self._jobs.get(live.job_id)
            if state is not None:
                event = {"event": "task", "data": _task_event(live, report)}
                for queue in state.listeners:
                    queue.put_nowait(event)
            if report.status in FINISHED:
                self._live.pop(report.task_id, None)
                for future in self._waiters.pop(report.task_id, []):
                    if not future.done():
                        future.set_result(report)
        for job_id, status in finished_jobs.items():
            state = self._jobs.pop(job_id, None)
            if state is not None:
                for queue in state.listeners:
                    queue.put_nowait({"event": "job", "data": {"id": job_id, "status": status}})

    # Waiting and watching -----------------------------------------------------------------

    def waiter(self, task_id: str) -> asyncio.Future[Report]:
        """A future for the task's final report; take it before the job is launched."""
        future: asyncio.Future[Report] = asyncio.get_running_loop().create_future()
        self._waiters[task_id].append(future)
        return future

    def forget(self, task_id: str, future: asyncio.Future[Report]) -> None:
        waiting = self._waiters.get(task_id)
        if waiting and future in waiting:
            waiting.remove(future)

    def subscribe(self, job_id: str) -> asyncio.Queue[dict[str, Any]] | None:
        """Live task and job events of a running job (None once it has ended)."""
        state = self._jobs.get(job_id)
        if state is None:
            return None
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        state.listeners.append(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        state = self._jobs.get(job_id)
        if state is not None and queue in state.listeners:
            state.listeners.remove(queue)

    def running(self, job_id: str) -> bool:
        return job_id in self._jobs

    # Start and stop -----------------------------------------------------------------------

    async def recover(self) -> int:
        """Tasks left active by an earlier process become `lost`: never silently re-run."""
        now = utcnow()
        message = "the central stopped while this task was active; it was not re-run"
        async with unit_of_work(self._sessions) as session:
            stale = list(await session.scalars(select(Task).where(Task.status.in_(ACTIVE))))
            if not stale:
                return 0
            jobs = {
                job.id: job
                for job in await session.scalars(
                    select(Job).where(Job.id.in_({task.job_id for task in stale}))
                )
            }
            for task in stale:
                task.status = TaskStatus.LOST
                task.message = message
                task.finished_at = now
                job = jobs[task.job_id]
                live = _Live(
                    job_id=job.id,
                    kind=job.kind.value,
                    action=job.action,
                    device=task.device_name,
                    site=task.site,
                    actor=Actor(job.actor_kind, job.actor_id, job.actor_name),
                    ticket=job.ticket,
                    reason=job.reason,
                    source_ip=None,
                    request_id=None,
                )
                stage(
                    session,
                    _outcome_event(
                        live, Report(str(task.id), TaskStatus.LOST, message=message), task.device_id
                    ),
                )
            await session.flush()
            await self._finish_jobs(session, set(jobs), now)
        return len(stale)

    async def close(self) -> None:
        for task in list(self._dispatchers):
            task.cancel()
        await asyncio.gather(*self._dispatchers, return_exceptions=True)
        if self._flusher is not None:
            await asyncio.shield(self._flusher)


def _job_status(counts: Counter[TaskStatus], *, cancelled: bool) -> JobStatus:
    if cancelled:
        return JobStatus.CANCELLED
    total = sum(counts.values()) - counts[TaskStatus.SKIPPED]  # skipped tasks had no part
    if counts[TaskStatus.SUCCEEDED] == total:
        return JobStatus.SUCCEEDED
    if counts[TaskStatus.SUCCEEDED] == 0:
        return JobStatus.FAILED
    return JobStatus.PARTIAL


def _outcome_event(live: _Live, report: Report, device_id: int | None) -> Event:
    return Event(
        f"{live.kind}.{report.status}",
        live.actor,
        outcome="success" if report.status is TaskStatus.SUCCEEDED else "failure",
        target_type="device",
        target_id=device_id,
        target_name=live.device,
        site=live.site,
        ticket=live.ticket,
        reason=live.reason,
        source_ip=live.source_ip,
        request_id=live.request_id,
        job_id=live.job_id,
        details={
            "action": live.action,
            "power_state": report.power_state,
            "path": report.path,
            "message": report.message,
            "attempts": report.attempts,
        },
    )


def _task_event(live: _Live, report: Report) -> dict[str, Any]:
    return {
        "device": live.device,
        "site": live.site,
        "status": report.status,
        "power_state": report.power_state,
        "path": report.path,
        "message": report.message,
        "attempts": report.attempts,
    }


async def _note_power(
    session: AsyncSession, final: list[Report], device_ids: dict[int, int | None], now: Any
) -> None:
    """A device that answered has a known power state: keep it for lists and the poller."""
    rows = [
        {
            "device_id": device_ids[int(r.task_id)],
            "state": r.power_state,
            "reachable": True,
            "path": r.path,
            "message": "",
            "checked_at": now,
            "last_seen_at": now,
            "changed_at": now,
        }
        for r in final
        if r.status is TaskStatus.SUCCEEDED
        and r.power_state is not None
        and device_ids.get(int(r.task_id)) is not None
    ]
    await upsert_power(session, rows)


async def upsert_power(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert or update power_status rows; `changed_at` moves only when the state does."""
    latest = {row["device_id"]: row for row in rows}  # one row per device and statement
    if not latest:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(PowerStatus)
    new = statement.excluded
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[PowerStatus.device_id],
            set_={
                "state": new.state,
                "reachable": new.reachable,
                "path": new.path,
                "message": new.message,
                "checked_at": new.checked_at,
                "last_seen_at": new.last_seen_at,
                "changed_at": case(
                    (PowerStatus.state != new.state, new.changed_at),
                    else_=PowerStatus.changed_at,
                ),
            },
        ),
        list(latest.values()),
    )
