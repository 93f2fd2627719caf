"""When the database is busy: job reports wait for it, go to the spill file if it lasts,
survive a restart, and a cancel stores them the moment it can.

The database is locked for real by another connection (SQLite: `BEGIN EXCLUSIVE`;
PostgreSQL: `LOCK TABLE task`); the orders go through the built-in agent to the fake driver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agents.drivers.fake import FakeDriver
from agents.protocol import HostKeySeen, PowerAction, TaskOrder, TaskStatus
from app.audit.models import AuditEvent
from app.audit.recorder import AuditRecorder
from app.centrals.presence import Presence
from app.config import Settings
from app.context import system_context
from app.db import make_sessionmaker
from app.fleetlink.hub import AgentHub
from app.jobs import service
from app.jobs.actions import Runtime
from app.jobs.engine import Cancelled, JobEngine, Patience, _refused
from app.jobs.models import ACTIVE, Job, JobKind, JobStatus, Task
from app.jobs.schemas import Targets
from app.jobs.spill import FILE_NAME
from app.main import create_app
from app.uow import unit_of_work
from app.vault import load_vault
from tests.busy import held, impatient_engine, settled
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, path, site

# Short enough for a test, with every wait event-driven: nothing here races the clock.
QUICK = Patience(
    retry_first=0.05, retry_max=0.2, spill_after=0.3, lock_wait=0.1, cancel_wait=0.5,
    close_wait=0.3,
)  # fmt: skip
LATE = "its report waited for the database"


@pytest.fixture
def seeded(settings: Settings, fake: FakeDriver) -> Settings:
    """web01 and web02 with an ipmi path each, written by an app that has stopped again."""
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet, drivers={"ipmi": fake})) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        for n in (1, 2):
            device(client, f"web0{n}")
            path(client, f"web0{n}", kind="ipmi", address=f"10.0.0.{n}", username="u", secret="s")
    return quiet


@dataclass
class Central:
    """A central's job side, as `create_app` wires it, with patience a test can afford."""

    engine: JobEngine
    run: Runtime
    reads: async_sessionmaker[AsyncSession]
    spill: Path


async def _no_host_keys(_: HostKeySeen, __: set[str]) -> None:
    raise AssertionError("no SSH device here")


@asynccontextmanager
async def central(
    settings: Settings, fake: FakeDriver, patience: Patience
) -> AsyncIterator[Central]:
    db = impatient_engine(settings.database_url)
    writes = make_sessionmaker(db, write=True)
    presence = Presence(writes, interval=0.05)  # never beats again: gone 0.15 s after this
    await presence.beat()
    spill = settings.data_dir / FILE_NAME
    agents = AgentHub(
        writes, AuditRecorder(writes), _no_host_keys, silence=timedelta(seconds=15),
        drivers={"ipmi": fake},
    )  # fmt: skip
    await agents.start(workers=False, refresh_every=3600)
    engine = JobEngine(writes, presence, agents, spill=spill, patience=patience)
    try:
        yield Central(
            engine, Runtime(writes, load_vault(settings), engine), make_sessionmaker(db), spill
        )
    finally:
        await agents.close()
        await engine.close()
        await db.dispose()


async def _prepare(c: Central, select_: str, action: PowerAction) -> tuple[Job, list[TaskOrder]]:
    """The job's rows, committed as a request commits them, and its orders (not yet sent)."""
    ctx = system_context("test")
    async with unit_of_work(c.run.sessions) as session:
        targets = await service.bulk_targets(session, ctx, Targets(select=select_), action)
        plan = service.Plan(JobKind.POWER, action, targets, {"select": select_}, 10.0)
        job, ids = await service.create_job(session, ctx, plan, c.engine.owner)
        orders = await service.orders_for(session, c.run.vault, plan, job, ids)
    return job, orders


def _spilled(c: Central) -> int:
    return len(c.spill.read_bytes().splitlines()) if c.spill.exists() else 0


async def _job(c: Central, job_id: str) -> tuple[JobStatus, Sequence[Task], list[str]]:
    """The job's status, its tasks, and its outcome events (not `requested`) as stored."""
    async with c.reads() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        tasks = (
            await session.scalars(select(Task).where(Task.job_id == job_id).order_by(Task.id))
        ).all()
        events = await session.scalars(
            select(AuditEvent.type).where(
                AuditEvent.job_id == job_id, AuditEvent.type != "power.requested"
            )
        )
        return job.status, tasks, list(events)


async def _ended(c: Central, job_id: str) -> bool:
    return (await _job(c, job_id))[0] is not JobStatus.RUNNING


def test_reports_wait_out_a_locked_database_and_are_stored_when_it_answers(
    seeded: Settings, fake: FakeDriver
) -> None:
    async def scenario() -> None:
        async with central(seeded, fake, QUICK) as c:
            job, orders = await _prepare(c, "web[01-02]", PowerAction.ON)
            with held(seeded.database_url, "task"):
                c.engine.launch(system_context("test"), job, orders)
                await settled(lambda: _spilled(c) == 2)  # both answered; the database is locked
                released = time.time()
            await settled(lambda: _ended(c, job.id))
            status, tasks, events = await _job(c, job.id)
            assert status is JobStatus.SUCCEEDED
            assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * 2
            assert all(LATE in t.message and "on done via ipmi" in t.message for t in tasks)
            assert all(t.finished_at and t.finished_at.timestamp() < released for t in tasks)
            assert events == ["power.succeeded"] * 2
            assert not c.spill.exists()  # everything in it is stored

    asyncio.run(scenario())


def test_spilled_outcomes_survive_a_restart_and_beat_lost(
    seeded: Settings, fake: FakeDriver
) -> None:
    async def scenario() -> None:
        async with central(seeded, fake, QUICK) as first:
            job, orders = await _prepare(first, "web01", PowerAction.OFF)
            with held(seeded.database_url, "task"):
                first.engine.launch(system_context("test"), job, orders)
                await settled(lambda: _spilled(first) == 1)
                await first.engine.close()  # the process ends with the database still locked
        assert fake.machines["10.0.0.1:623"].actions == ["off"]
        assert _spilled(first) == 1
        async with central(seeded, fake, QUICK) as second:  # the next start, same data folder
            assert (await _job(second, job.id))[1][0].status in ACTIVE  # as the crash left it
            assert await second.engine.replay() == 1
            assert await second.engine.recover() == 0  # its owner is gone, but it has ended
            status, [task], events = await _job(second, job.id)
            assert (status, task.status, task.power_state) == ("succeeded", "succeeded", "off")
            assert LATE in task.message
            assert events == ["power.succeeded"]  # never `power.lost`
            assert not second.spill.exists()
        assert fake.machines["10.0.0.1:623"].actions == ["off"]  # never re-run

    asyncio.run(scenario())


def test_a_cancel_stores_late_reports_with_their_true_outcome_and_frees_the_device(
    seeded: Settings, fake: FakeDriver
) -> None:
    slow = QUICK.__class__(**{**QUICK.__dict__, "retry_first": 60.0, "retry_max": 60.0})

    async def scenario() -> None:
        async with central(seeded, fake, slow) as c:
            job, orders = await _prepare(c, "web01", PowerAction.OFF)
            with held(seeded.database_url, "task"):
                c.engine.launch(system_context("test"), job, orders)
                await settled(lambda: _spilled(c) == 1)  # and the engine backs off for 60 s
                during = await c.engine.cancel(job.id)  # answers; the report still waits
                assert during == Cancelled(stopped=0, late=1, waiting=1)
            started = time.monotonic()
            assert await c.engine.cancel(job.id) == Cancelled(stopped=0, late=1, waiting=0)
            assert time.monotonic() - started < 30  # stored now, not after the back-off
            status, [task], events = await _job(c, job.id)
            assert status is JobStatus.CANCELLED
            assert task.status is TaskStatus.SUCCEEDED  # the device did it: that is the truth
            assert LATE in task.message
            assert events == ["power.succeeded"]
            await _prepare(c, "web01", PowerAction.ON)  # the device is free for the next change

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("exc", "refused"),
    [
        (PoolTimeout("QueuePool limit of size 10 overflow 20 reached"), False),
        (DisconnectionError("the connection was invalidated"), False),
        (OperationalError("UPDATE task", {}, Exception("database is locked")), False),
        (IntegrityError("UPDATE task", {}, Exception("NOT NULL constraint failed")), True),
        (TypeError("a bug of ours"), True),
    ],
)
def test_only_a_statement_the_database_refuses_is_set_aside(exc: Exception, refused: bool) -> None:
    """A pool that ran out of connections is a busy database, whose reports wait: it used
    to count as a refusal, and the reports went to the rejected file, never stored."""
    assert _refused(exc) is refused
