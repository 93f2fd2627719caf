"""Audit event types: one spelling each, as stored under the hash chain; old rows still read."""

from __future__ import annotations

import asyncio
from typing import cast

from fastapi.testclient import TestClient

from agents.protocol import FINISHED
from app.audit.models import EventType
from app.audit.service import SYSTEM, Event, append
from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.jobs.models import TASK_ENDED, TASK_REQUESTED, JobKind
from tests.factories import ok


def test_each_type_is_spelled_from_its_name() -> None:
    for member in EventType:
        assert member.value == member.name.lower().replace("_", ".", 1)


def test_each_job_kind_has_a_type_for_its_request_and_every_end_of_a_task() -> None:
    for kind in JobKind:
        assert TASK_REQUESTED[kind] == f"{kind}.requested"
        for status in FINISHED:
            assert TASK_ENDED[kind, status] == f"{kind}.{status}"


async def _append_legacy(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine, write=True)() as session:
            await append(session, [Event(cast(EventType, "legacy.renamed"), SYSTEM)])
            await session.commit()
    finally:
        await engine.dispose()


def test_a_type_no_longer_written_is_still_listed_filtered_and_verified(
    client: TestClient, settings: Settings
) -> None:
    asyncio.run(_append_legacy(settings))
    items = ok(client.get("audit", params={"type": "legacy.renamed"}))["items"]
    assert [item["type"] for item in items] == ["legacy.renamed"]
    assert [item["type"] for item in ok(client.get("audit", params={"type": "legacy.*"}))["items"]]
    assert ok(client.get("audit/verify"))["ok"] is True
