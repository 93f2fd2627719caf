"""Group commit: concurrent stand-alone events share commits and still form one valid chain."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, text

from app.audit import service
from app.audit.models import GENESIS, AuditEvent, EventType
from app.audit.recorder import AuditRecorder
from app.audit.service import SYSTEM, Event
from app.config import Settings
from app.db import make_engine, make_sessionmaker

CALLERS = 40


async def _record_concurrently(url: str) -> tuple[int, int, bool]:
    engine = make_engine(url)
    commits = 0

    def counted(*_: object) -> None:
        nonlocal commits
        commits += 1

    sa_event.listen(engine.sync_engine, "commit", counted)
    recorder = AuditRecorder(make_sessionmaker(engine, write=True))
    await asyncio.gather(
        *(
            recorder.record(Event(EventType.POWER_DRIFT, SYSTEM, target_id=n))
            for n in range(CALLERS)
        )
    )
    await recorder.close()
    async with make_sessionmaker(engine)() as session:
        count = await session.scalar(select(func.count()).select_from(AuditEvent))
        verdict = await service.verify(session)
    await engine.dispose()
    return count or 0, commits, verdict.ok


def test_concurrent_events_share_commits_and_chain(settings: Settings) -> None:
    count, commits, intact = asyncio.run(_record_concurrently(settings.database_url))
    assert count == CALLERS
    assert intact
    assert commits < CALLERS / 4  # callers joined each other's commits


async def _failing_commit(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as connection:  # no head row: the append itself fails
        await connection.execute(text("DELETE FROM audit_head"))
    recorder = AuditRecorder(make_sessionmaker(engine, write=True))
    try:
        results = await asyncio.gather(
            *(recorder.record(Event(EventType.POWER_DRIFT, SYSTEM)) for _ in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(result, RuntimeError) for result in results)
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :g)"), {"g": GENESIS}
            )
    await recorder.record(
        Event(EventType.POWER_DRIFT, SYSTEM)
    )  # the next batch does not inherit it
    await engine.dispose()


def test_a_failed_commit_reaches_every_waiter(settings: Settings) -> None:
    asyncio.run(_failing_commit(settings.database_url))


async def _cancelled_caller(url: str) -> int:
    engine = make_engine(url)
    recorder = AuditRecorder(make_sessionmaker(engine, write=True))
    caller = asyncio.create_task(recorder.record(Event(EventType.POWER_DRIFT, SYSTEM)))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await recorder.close()
    async with make_sessionmaker(engine)() as session:
        count = await session.scalar(select(func.count()).select_from(AuditEvent))
    await engine.dispose()
    return count or 0


def test_a_cancelled_caller_does_not_lose_its_event(settings: Settings) -> None:
    assert asyncio.run(_cancelled_caller(settings.database_url)) == 1


async def _record_long_names(url: str) -> tuple[list[tuple[str, str | None, str | None]], bool]:
    engine = make_engine(url)
    recorder = AuditRecorder(make_sessionmaker(engine, write=True))
    long = Event(
        EventType.ACCESS_DENIED,
        SYSTEM,
        target_name="https://hooks.example/" + "x" * 2000,  # a webhook's URL, say
        ticket="T" * 300,
        request_id="r" * 100,
    )
    await asyncio.gather(
        recorder.record(long), recorder.record(Event(EventType.POWER_DRIFT, SYSTEM))
    )
    async with make_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(AuditEvent.type, AuditEvent.target_name, AuditEvent.ticket).order_by(
                AuditEvent.seq
            )
        )
        verdict = await service.verify(session)
    await engine.dispose()
    return [(kind, target, ticket) for kind, target, ticket in rows], verdict.ok


def test_over_long_names_are_cut_not_lost(settings: Settings) -> None:
    """A name longer than its column failed the whole batch on PostgreSQL: the refusal it
    recorded, and every other caller's event that shared its commit, were lost."""
    rows, intact = asyncio.run(_record_long_names(settings.database_url))
    assert intact
    assert sorted(row[0] for row in rows) == ["access.denied", "power.drift"]
    _, target, ticket = next(row for row in rows if row[0] == "access.denied")
    assert target == "https://hooks.example/" + "x" * 177 + "…"
    assert ticket == "T" * 127 + "…"
