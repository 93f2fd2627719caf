"""The central's side of running jobs: orders out to the agent, reports back into the database.

Reports from thousands of devices arrive at once, so they are written in batches: every
report that arrives while one batch commits joins the next (the group commit of the audit
recorder, for the same reason). A batch updates the tasks, the devices' power state and the
audit (one outcome event per device), then wakes whoever waits on those tasks.

An outcome is never dropped. A batch the database does not take is tried again, with capped
back-off, for as long as the process lives; once the database has been unavailable for
`spill_after` seconds, waiting outcomes are also appended to the spill file in the data
folder, which is read back when the database answers and at the next start, before recovery
could call those tasks `lost`. A final state is written only over an active one, so a late
report never overwrites `lost` (nor `lost` a result), and a job finishes, and `job.finished`
is sent, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import CursorResult, Table, bindparam, case, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    PendingRollbackError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agents.protocol import (
    FINISHED,
    PowerAction,
    PowerOrder,
    PowerState,
    Report,
    TaskOrder,
    TaskStatus,
)
from app.audit.service import Actor, Event, stage
from app.centrals.presence import Presence
from app.context import RequestContext
from app.db import limit_lock_wait, utcnow
from app.inventory.models import PowerStatus
from app.jobs.models import ACTIVE, ACTIVE_SQL, TASK_ENDED, Job, JobKind, JobStatus, Task
from app.jobs.spill import REJECTED_FILE, SpillFile
from app.uow import unit_of_work
from app.webhooks import outbox

log = logging.getLogger(__name__)

_STARTS = frozenset({PowerAction.ON, PowerAction.CYCLE})  # what `stagger` paces
_MAX_BATCH = 2000
_CHUNK = 5000  # ids per IN (...)
T = TypeVar("T")

# A Core UPDATE run once per row (executemany): the ORM's bulk update by primary key collects
# each row's changes in Python first, which took a third of the server's CPU on a 1,000-task job.
# Only an active task takes a final state: a final state is never overwritten.
_TASKS = cast(Table, Task.__table__)
_FINISH_TASK = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("task_id"), text(ACTIVE_SQL))
    .values({name: bindparam(name) for name in
             ("status", "power_state", "path", "message", "attempts", "finished_at")})
)  # fmt: skip


class AgentLink(Protocol):
    """How the central hands orders to agents (`app.fleetlink.hub.AgentHub`): each order's
    reports come back to the sink given with it."""

    def submit(self, order: TaskOrder, sink: Callable[[Report], None]) -> None: ...

    def cancel(self, task_id: str) -> bool: ...


@dataclass(frozen=True)
class Patience:
    """How the engine waits for a database that does not take its reports."""

    retry_first: float = 0.5  # s before the first retry; doubled after each failure
    retry_max: float = 30.0  # s between retries at most, for as long as the process lives
    spill_after: float = 30.0  # s of an unavailable database before outcomes go to the spill file
    lock_wait: float = 10.0  # s one write waits for a lock (SQLite's busy timeout is 10 s too)
    cancel_wait: float = 5.0  # s a cancel waits for the late reports of its job to be stored
    close_wait: float = 15.0  # s the last reports get at shutdown before they are spilled


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


@dataclass(eq=False)
class _Outcome:
    """A report on its way to the database."""

    report: Report
    live: _Live | None
    at: datetime  # when it arrived: the task's `finished_at`
    delayed_since: datetime | None = None  # the database was unavailable from then on
    spilled: bool = False


@dataclass
class _Job:
    task_ids: frozenset[str]  # ids only: orders carry opened secrets, kept no longer than sent
    unsent: set[str]
    cancelled: bool = False
    listeners: list[asyncio.Queue[dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: tasks stopped, and tasks that had finished but not yet been stored."""

    stopped: int
    late: int = 0  # finished on the device; the report was still waiting for the database
    waiting: int = 0  # of those, still waiting when the cancel answered (stored when it can)
    recovered: int = 0  # tasks of a central that is gone, ended as `lost`


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
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        presence: Presence,
        link: AgentLink,
        *,
        spill: Path | None = None,
        patience: Patience | None = None,
    ) -> None:
        self._sessions = sessions
        self._presence = presence
        self._spill = SpillFile(spill) if spill is not None else None
        self._patience = patience or Patience()
        self._link = link
        self._live: dict[str, _Live] = {}
        self._jobs: dict[str, _Job] = {}
        self._waiters: dict[str, list[asyncio.Future[Report]]] = defaultdict(list)
        self._queue: list[_Outcome] = []
        self._writing: list[_Outcome] = []
        self._down_since: datetime | None = None  # the first failed write of a run of them
        self._spilled = False  # the spill file holds outcomes of this process
        self._singles = 0  # reports to write one at a time: a batch held one the database refuses
        self._wake = asyncio.Event()  # cut a back-off short (a cancel, the shutdown)
        self._progress = asyncio.Event()  # set (and replaced) after every stored batch
        self._flusher: asyncio.Task[None] | None = None
        self._dispatchers: set[asyncio.Task[None]] = set()
        self._pacer = Pacer()

    @property
    def owner(self) -> str:
        """The id of this central, written on the tasks it runs."""
        return self._presence.id

    # Orders out --------------------------------------------------------------------------

    def launch(self, ctx: RequestContext, job: Job, orders: Sequence[TaskOrder]) -> None:
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
        by_site: dict[str, list[TaskOrder]] = defaultdict(list)
        for order in orders:
            by_site[order.site].append(order)
        for site_orders in by_site.values():
            task = asyncio.create_task(self._dispatch(job.id, job.stagger, site_orders))
            self._dispatchers.add(task)
            task.add_done_callback(self._dispatchers.discard)

    async def _dispatch(self, job_id: str, stagger: int | None, orders: list[TaskOrder]) -> None:
        state = self._jobs[job_id]
        for order in orders:
            if state.cancelled:
                return
            if stagger and isinstance(order, PowerOrder) and order.action in _STARTS:
                await self._pacer.slot(order.site, stagger)
                if state.cancelled:
                    return
            state.unsent.discard(order.task_id)
            self._link.submit(order, self.report)

    async def cancel(self, job_id: str) -> Cancelled:
        """Stop what has not finished: unsent tasks end at once, sent ones when the agent stops.

        Tasks that finished on their devices but whose reports still wait for the database
        are stored now with their true outcome, if the database takes them within
        `cancel_wait`; tasks of a central that is gone end as `lost`.
        """
        state = self._jobs.get(job_id)
        if state is None:
            return Cancelled(0, recovered=await self.recover(job_id))
        state.cancelled = True
        for task_id in list(state.unsent):
            self.report(
                Report(task_id, TaskStatus.CANCELLED, message="cancelled before it was sent")
            )
        stopped = len(state.unsent)
        state.unsent.clear()
        late = {o.report.task_id for o in self._unsaved(job_id) if o.report.status in FINISHED}
        for task_id in state.task_ids - late:
            if task_id in self._live and self._link.cancel(task_id):
                stopped += 1
        if late:
            await self._stored(job_id, self._patience.cancel_wait)
        waiting = {o.report.task_id for o in self._unsaved(job_id) if o.report.status in FINISHED}
        return Cancelled(stopped, len(late), len(waiting & late))

    # Reports in --------------------------------------------------------------------------

    def report(self, report: Report) -> None:
        """The agent's sink: queue the report; it is written with the next batch."""
        self._queue.append(_Outcome(report, self._live.get(report.task_id), utcnow()))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="job-reports")

    def _unsaved(self, job_id: str | None = None) -> list[_Outcome]:
        waiting = self._writing + self._queue
        if job_id is None:
            return waiting
        return [o for o in waiting if o.live is not None and o.live.job_id == job_id]

    async def _stored(self, job_id: str, within: float) -> None:
        """Try the database now, and wait (at most `within` s) until the job's reports are in."""
        self._wake.set()
        deadline = time.monotonic() + within
        while self._unsaved(job_id) and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)

    async def _flush(self) -> None:
        delay = 0.0
        while self._queue:
            size = 1 if self._singles else _MAX_BATCH
            batch, self._queue = self._queue[:size], self._queue[size:]
            self._writing = batch
            self._wake.clear()
            attempt = utcnow()
            try:
                finished, kept = await self._watching(
                    self._write(batch), self._down_since or attempt
                )
            except Exception as exc:
                self._writing = []
                if _refused(exc):  # the statement, not the database: the others must not wait
                    if len(batch) > 1:
                        self._queue[:0] = batch
                        self._singles = len(batch)
                    else:
                        await self._reject(batch[0], exc)
                    continue
                self._queue[:0] = batch  # keep the order
                self._down_since = self._down_since or attempt
                for outcome in self._unsaved():
                    outcome.delayed_since = outcome.delayed_since or self._down_since
                delay = min(self._patience.retry_max, max(self._patience.retry_first, delay * 2))
                log.warning(
                    "the database did not take %d task reports (%s: %s); trying again in %g s",
                    len(batch),
                    type(exc).__name__,
                    getattr(exc, "orig", exc),
                    delay,
                )
                await self._watching(self._pause(delay), self._down_since)
                continue
            self._writing = []
            self._singles = max(0, self._singles - len(batch))
            delay = 0.0
            if self._down_since is not None:  # over now, though more reports may be waiting
                log.warning(
                    "the database takes task reports again (unavailable since %s)",
                    self._down_since.isoformat(timespec="seconds"),
                )
                self._down_since = None
            self._announce(batch, finished, kept)
            self._progress.set()
            self._progress = asyncio.Event()
            if not self._queue:
                await self._caught_up()

    async def _reject(self, outcome: _Outcome, exc: Exception) -> None:
        """A report the database refuses by itself (a bug, never a busy database): kept in
        the log and the rejected file for a person, so that every other report goes on."""
        self._singles = max(0, self._singles - 1)
        record = _record(outcome)
        log.error(
            "the database refuses the report of task %s (%s); it is kept here: %s",
            outcome.report.task_id,
            type(exc).__name__,
            record,
        )
        if self._spill is not None:
            rejected = SpillFile(self._spill.path.with_name(REJECTED_FILE))
            with contextlib.suppress(OSError):
                await asyncio.to_thread(rejected.append, [record])
        self._announce([outcome], {}, {})  # its waiters and listeners learn what the device did
        self._progress.set()
        self._progress = asyncio.Event()

    async def _caught_up(self) -> None:
        """Every report is stored: the spill file holds nothing the database lacks."""
        if self._spilled and self._spill is not None:
            self._spilled = False
            await asyncio.to_thread(self._spill.clear)

    async def _pause(self, seconds: float) -> None:
        """Back-off before the next try, cut short by a cancel or the shutdown."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _watching(self, work: Coroutine[Any, Any, T], since: datetime) -> T:
        """Run `work`; meanwhile, once the database has been unavailable `spill_after` seconds
        (counted from `since`), spill the outcomes that wait, and those that join them."""
        task = asyncio.ensure_future(work)
        after = self._patience.spill_after
        try:
            while True:
                wait = (since + timedelta(seconds=after) - utcnow()).total_seconds()
                if wait <= 0:
                    await self._spill_waiting(since)
                    wait = min(1.0, after)  # newcomers are spilled within a second
                done, _ = await asyncio.wait({task}, timeout=wait)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _spill_waiting(self, since: datetime) -> None:
        waiting = self._unsaved()
        for outcome in waiting:
            outcome.delayed_since = outcome.delayed_since or since
        fresh = [o for o in waiting if not o.spilled and o.report.status in FINISHED]
        if not fresh:
            return
        if self._spill is None:
            log.error(
                "%d task outcomes wait for the database, with no data folder to keep them in",
                len(fresh),
            )
            return
        try:
            await asyncio.to_thread(self._spill.append, [_record(o) for o in fresh])
        except OSError:
            log.exception(
                "the spill file %s could not be written; the outcomes stay in memory",
                self._spill.path,
            )
            return
        for outcome in fresh:
            outcome.spilled = True
        self._spilled = True
        log.warning(
            "the database has not taken task reports since %s: %d outcomes kept in %s till it does",
            since.isoformat(timespec="seconds"),
            len(fresh),
            self._spill.path,
        )

    async def _write(self, batch: list[_Outcome]) -> tuple[dict[str, JobStatus], dict[str, Report]]:
        """Store the batch: (jobs that ended, reports refused because the task had ended)."""
        started = [int(o.report.task_id) for o in batch if o.report.status is TaskStatus.RUNNING]
        final = list(
            {o.report.task_id: o for o in reversed(batch) if o.report.status in FINISHED}.values()
        )
        async with unit_of_work(self._sessions) as session:
            await limit_lock_wait(session, self._patience.lock_wait)
            if started:
                await session.execute(
                    update(Task)
                    .where(Task.id.in_(started), Task.status == TaskStatus.QUEUED)
                    .values(status=TaskStatus.RUNNING, started_at=utcnow())
                )
            if not final:
                return {}, {}
            rows = await _lock_tasks(session, [int(o.report.task_id) for o in final])
            applied = [o for o in final if _row_active(rows.get(int(o.report.task_id)))]
            kept = {
                o.report.task_id: _stored_report(row)
                for o in final
                if (row := rows.get(int(o.report.task_id))) is not None and not _row_active(row)
            }
            for task_id, stored in kept.items():
                log.warning(
                    "task %s had already ended as %s; its later report is not stored",
                    task_id,
                    stored.status,
                )
            # Jobs another central ended: their streams here end with the status it gave.
            ended = await _ended_jobs(session, {rows[int(t)].job_id for t in kept})
            if not applied:
                return ended, kept
            await session.execute(
                _FINISH_TASK,
                [
                    {
                        "task_id": int(o.report.task_id),
                        "status": o.report.status,
                        "power_state": o.report.power_state,
                        "path": o.report.path,
                        "message": _message(o),
                        "attempts": o.report.attempts,
                        "finished_at": o.at,
                    }
                    for o in applied
                ],
            )
            device_ids = {task_id: row.device_id for task_id, row in rows.items()}
            await _note_power(session, [o.report for o in applied], device_ids, utcnow())
            jobs = await _jobs_of(
                session, {rows[int(o.report.task_id)].job_id for o in applied if o.live is None}
            )
            for o in applied:
                row = rows[int(o.report.task_id)]
                live = o.live or _live_of(jobs[row.job_id], row)
                report = dataclasses.replace(o.report, message=_message(o))
                stage(session, _outcome_event(live, report, row.device_id))
            finished = await self._finish_jobs(
                session, {rows[int(o.report.task_id)].job_id for o in applied}
            )
            return ended | finished, kept

    async def _finish_jobs(self, session: AsyncSession, job_ids: set[str]) -> dict[str, JobStatus]:
        """Jobs with no active task left get their final status, once (`job.finished` too)."""
        finished: dict[str, JobStatus] = {}
        now = utcnow()
        for job_id in sorted(job_ids):
            # One finisher per job at a time (PostgreSQL; SQLite has one writer anyway): two
            # centrals ending its last tasks at once would each see the other's as active.
            await session.execute(select(Job.id).where(Job.id == job_id).with_for_update())
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
            result = cast(
                CursorResult[Any],
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                    .values(status=status, finished_at=now)
                ),
            )
            if result.rowcount:
                finished[job_id] = status
        await outbox.jobs_finished(session, finished)  # webhooks, in this transaction
        return finished

    def _announce(
        self, batch: list[_Outcome], finished_jobs: dict[str, JobStatus], kept: dict[str, Report]
    ) -> None:
        for outcome in batch:
            live = outcome.live or self._live.get(outcome.report.task_id)
            if live is None:
                continue
            report = kept.get(outcome.report.task_id) or dataclasses.replace(
                outcome.report, message=_message(outcome)
            )
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

    async def replay(self) -> int:
        """Store the outcomes an earlier process spilled; at start, before `recover`.

        A spilled outcome is the device's true answer and beats `lost`; one whose task has
        ended meanwhile is not stored again. They go through the same retries as any report,
        so a start waits for a database that is busy.
        """
        if self._spill is None:
            return 0
        records = await asyncio.to_thread(self._spill.read)
        outcomes = [outcome for record in records if (outcome := _from_record(record))]
        if not outcomes:
            await asyncio.to_thread(self._spill.clear)
            return 0
        log.warning(
            "storing %d task outcomes kept in %s by an earlier process",
            len(outcomes),
            self._spill.path,
        )
        self._spilled = True
        self._queue[:0] = outcomes
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="job-reports")
        while self._unsaved():
            await self._progress.wait()
        return len(outcomes)

    async def recover(self, job_id: str | None = None) -> int:
        """Active tasks of a central that is gone become `lost`: never silently re-run.

        Run at start (after `replay`), by every heartbeat (a peer that died), and by a cancel
        of a job this process does not run. Tasks of a live central, this one included, are
        left to it.
        """
        now = utcnow()
        async with unit_of_work(self._sessions) as session:
            await limit_lock_wait(session, self._patience.lock_wait)
            owners = await self._presence.owners(session)
            query = select(Task.id, Task.owner_id).where(
                text(f"task.{ACTIVE_SQL}"), owners.gone(Task.owner_id)
            )
            if job_id is not None:
                query = query.where(Task.job_id == job_id)
            by_owner: dict[str | None, list[int]] = defaultdict(list)
            for task_id, owner in await session.execute(query):
                by_owner[owner].append(task_id)
            ended: list[Any] = []
            for owner, ids in by_owner.items():
                message = f"{owners.why(owner)} while this task was active; it was not re-run"
                for start in range(0, len(ids), _CHUNK):
                    ended += (
                        await session.execute(
                            update(Task)
                            .where(Task.id.in_(ids[start : start + _CHUNK]), text(ACTIVE_SQL))
                            .values(status=TaskStatus.LOST, message=message, finished_at=now)
                            .returning(
                                Task.id,
                                Task.job_id,
                                Task.device_id,
                                Task.device_name,
                                Task.site,
                                Task.message,
                            )
                        )
                    ).all()
            if not ended:
                return 0
            jobs = await _jobs_of(session, {row.job_id for row in ended})
            for row in ended:
                report = Report(str(row.id), TaskStatus.LOST, message=row.message)
                stage(
                    session, _outcome_event(_live_of(jobs[row.job_id], row), report, row.device_id)
                )
            await session.flush()
            await self._finish_jobs(session, set(jobs))
        log.warning("%d tasks of centrals that are gone ended as lost", len(ended))
        return len(ended)

    async def close(self) -> None:
        """Stop dispatching; give the last reports `close_wait` seconds, then spill them."""
        for task in list(self._dispatchers):
            task.cancel()
        await asyncio.gather(*self._dispatchers, return_exceptions=True)
        flusher = self._flusher
        if flusher is None or flusher.done():
            return
        self._wake.set()
        done, _ = await asyncio.wait({flusher}, timeout=self._patience.close_wait)
        if done:
            return
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await self._spill_waiting(self._down_since or utcnow())
        log.error(
            "stopping with %d task outcomes the database did not take; the next start "
            "stores them from the spill file",
            sum(1 for o in self._unsaved() if o.report.status in FINISHED),
        )


def _job_status(counts: Counter[TaskStatus], *, cancelled: bool) -> JobStatus:
    if cancelled:
        return JobStatus.CANCELLED
    total = sum(counts.values()) - counts[TaskStatus.SKIPPED]  # skipped tasks had no part
    if counts[TaskStatus.SUCCEEDED] == total:
        return JobStatus.SUCCEEDED
    if counts[TaskStatus.SUCCEEDED] == 0:
        return JobStatus.FAILED
    return JobStatus.PARTIAL


async def _lock_tasks(session: AsyncSession, ids: list[int]) -> dict[int, Any]:
    """The tasks' rows, locked until the batch commits (PostgreSQL): a recovery running at the
    same moment waits, then finds them ended and leaves them be."""
    rows: dict[int, Any] = {}
    for start in range(0, len(ids), _CHUNK):
        found = await session.execute(
            select(
                Task.id,
                Task.job_id,
                Task.device_id,
                Task.device_name,
                Task.site,
                Task.status,
                Task.power_state,
                Task.path,
                Task.message,
                Task.attempts,
            )
            .where(Task.id.in_(ids[start : start + _CHUNK]))
            .with_for_update()
        )
        rows.update({row.id: row for row in found})
    return rows


def _refused(exc: Exception) -> bool:
    """The database answered and refused the statement: trying again cannot help."""
    if isinstance(exc, IntegrityError | ProgrammingError | DataError):
        return True
    transient = DBAPIError | OSError | TimeoutError | PoolTimeout | DisconnectionError
    return not isinstance(exc, transient | PendingRollbackError)


async def _ended_jobs(session: AsyncSession, job_ids: set[str]) -> dict[str, JobStatus]:
    if not job_ids:
        return {}
    found = await session.execute(
        select(Job.id, Job.status).where(Job.id.in_(job_ids), Job.status != JobStatus.RUNNING)
    )
    return {row.id: row.status for row in found}


def _row_active(row: Any) -> bool:
    return row is not None and row.status in ACTIVE


def _stored_report(row: Any) -> Report:
    return Report(str(row.id), row.status, row.power_state, row.path, row.message, row.attempts)


async def _jobs_of(session: AsyncSession, job_ids: set[str]) -> dict[str, Job]:
    if not job_ids:
        return {}
    return {job.id: job for job in await session.scalars(select(Job).where(Job.id.in_(job_ids)))}


def _live_of(job: Job, task: Any) -> _Live:
    """The outcome event's context from the rows, for a task this process did not launch."""
    return _Live(
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


def _message(outcome: _Outcome) -> str:
    """The report's message, and, if the database kept it waiting, when the device finished."""
    message = outcome.report.message
    if outcome.delayed_since is None or outcome.report.status not in FINISHED:
        return message
    return (
        f"{message} (finished on the device at {outcome.at:%Y-%m-%d %H:%M:%S} UTC; its report "
        f"waited for the database, unavailable since {outcome.delayed_since:%H:%M:%S} UTC)"
    ).lstrip()


def _record(outcome: _Outcome) -> dict[str, Any]:
    """An outcome as a line of the spill file: everything its event needs after a restart."""
    report, live = outcome.report, outcome.live
    record: dict[str, Any] = {
        "task": report.task_id,
        "status": report.status,
        "power_state": report.power_state,
        "path": report.path,
        "message": report.message,
        "attempts": report.attempts,
        "at": outcome.at.isoformat(),
        "delayed_since": outcome.delayed_since.isoformat() if outcome.delayed_since else None,
    }
    if live is not None:
        record["live"] = dataclasses.asdict(live)
    return record


def _from_record(record: dict[str, Any]) -> _Outcome | None:
    try:
        report = Report(
            str(record["task"]),
            TaskStatus(record["status"]),
            PowerState(record["power_state"]) if record.get("power_state") else None,
            record.get("path"),
            str(record.get("message") or ""),
            int(record.get("attempts") or 0),
        )
        live = None
        if isinstance(record.get("live"), dict):
            fields = dict(record["live"])
            fields["actor"] = Actor(**fields["actor"])
            live = _Live(**fields)
        at = datetime.fromisoformat(record["at"])
        since = record.get("delayed_since")
        return _Outcome(report, live, at, datetime.fromisoformat(since) if since else at, True)
    except (KeyError, TypeError, ValueError):
        log.warning("a line of the spill file is not an outcome; skipped: %.200r", record)
        return None


def _outcome_event(live: _Live, report: Report, device_id: int | None) -> Event:
    return Event(
        TASK_ENDED[JobKind(live.kind), report.status],
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
                "last_seen_at": func.coalesce(new.last_seen_at, PowerStatus.last_seen_at),
                "changed_at": case(
                    (PowerStatus.state != new.state, new.changed_at),
                    else_=PowerStatus.changed_at,
                ),
            },
        ),
        list(latest.values()),
    )
