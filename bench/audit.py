"""Audit log: append throughput under concurrent writers, and verify time for 1,000,000 events.

Reference measured in the same run: the same rows inserted without the hash chain (no head
lock, no hashing), so the ratio is what tamper evidence costs.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import insert

from app.audit import service
from app.audit.models import AuditEvent, EventType
from app.audit.recorder import AuditRecorder
from app.audit.service import Actor, Event
from app.db import make_engine, make_sessionmaker, utcnow
from app.migrate import upgrade
from app.uow import unit_of_work
from bench.server import temporary_database

WRITERS = 16
APPENDS = 4000
VERIFY_EVENTS = 1_000_000
BATCH = 10_000
ACTOR = Actor("user", 1, "admin")


def _event(n: int) -> Event:
    return Event(
        EventType.DEVICE_UPDATED,
        ACTOR,
        target_type="device",
        target_id=n,
        target_name=f"web{n:05d}",
        site="bj-dc1",
        ticket="INC-1",
        source_ip="10.0.0.1",
        details={"before": {"vendor": ""}, "after": {"vendor": "Dell"}},
    )


async def _appends(url: str) -> tuple[float, float, float, float]:
    engine = make_engine(url)
    writers = make_sessionmaker(engine, write=True)
    per_writer = APPENDS // WRITERS

    async def chained(worker: int) -> None:
        for n in range(per_writer):
            async with unit_of_work(writers) as session:
                service.stage(session, _event(worker * per_writer + n))

    recorder = AuditRecorder(writers)

    async def recorded(worker: int) -> None:
        for n in range(per_writer):
            await recorder.record(_event(worker * per_writer + n))

    async def chained_tens(worker: int) -> None:
        for n in range(0, per_writer, 10):
            async with unit_of_work(writers) as session:
                for k in range(10):
                    service.stage(session, _event(worker * per_writer + n + k))

    async def plain(worker: int) -> None:
        for n in range(per_writer):
            async with unit_of_work(writers) as session:
                row = {
                    "seq": -(worker * per_writer + n + 1),
                    "at": utcnow(),
                    "type": "x",
                    "outcome": "success",
                    "actor_kind": "user",
                    "actor_name": "admin",
                    "details_json": "{}",
                    "prev_hash": "",
                    "hash": "",
                }
                await session.execute(insert(AuditEvent), [row])

    rates = []
    for work in (recorded, chained, chained_tens, plain):
        started = time.perf_counter()
        await asyncio.gather(*(work(w) for w in range(WRITERS)))
        rates.append(per_writer * WRITERS / (time.perf_counter() - started))
    await engine.dispose()
    return rates[0], rates[1], rates[2], rates[3]


async def _verify(url: str) -> tuple[float, float, bool]:
    engine = make_engine(url)
    writers = make_sessionmaker(engine, write=True)
    started = time.perf_counter()
    for start in range(0, VERIFY_EVENTS, BATCH):
        async with unit_of_work(writers) as session:
            await service.append(session, [_event(n) for n in range(start, start + BATCH)])
    build = VERIFY_EVENTS / (time.perf_counter() - started)
    async with make_sessionmaker(engine)() as session:
        started = time.perf_counter()
        verdict = await service.verify(session)
        rate = verdict.checked / (time.perf_counter() - started)
    await engine.dispose()
    return build, rate, verdict.ok and verdict.checked == VERIFY_EVENTS


def run() -> None:
    print(
        f"\n== audit: {WRITERS} concurrent writers x {APPENDS // WRITERS} appends; "
        f"verify of {VERIFY_EVENTS:,} events =="
    )
    for backend in ("sqlite", "postgresql"):
        with temporary_database(backend) as url:
            upgrade(url)
            recorded, chained, tens, plain = asyncio.run(_appends(url))
        with temporary_database(backend) as url:
            upgrade(url)
            build, verify_rate, intact = asyncio.run(_verify(url))
        print(
            f"{backend:>10}: append {recorded:,.0f} events/s each awaited alone, group commit "
            f"(aim >= 2,000); {chained:,.0f}/s one per caller's transaction (unchained insert "
            f"{plain:,.0f}/s, x{plain / chained:.1f}); {tens:,.0f}/s ten per transaction; "
            f"bulk append {build:,.0f}/s; verify {verify_rate:,.0f} events/s (aim >= 200,000), "
            f"chain {'intact' if intact else 'BROKEN'}"
        )
