"""The audit export: oldest first, each event with its hash, as JSON lines or CSV.

It covers the events committed when it began (up to the head's seq then) and reads them in
keyset pages by seq, each page in a read transaction of its own that ends before the page is
sent: a reader who stops reading holds no database connection, and on SQLite no snapshot
that keeps the write-ahead log from being checkpointed.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from enum import StrEnum

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import csv_cells
from app.audit import service
from app.audit.models import AuditEvent
from app.audit.schemas import AuditEventRead
from app.exports import pieces

BATCH = 1000
COLUMNS = list(AuditEventRead.model_fields)


class AuditFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"

    @property
    def media_type(self) -> str:
        return "text/csv" if self is AuditFormat.CSV else "application/x-ndjson"


async def lines(
    sessions: async_sessionmaker[AsyncSession], flt: service.AuditFilter, fmt: AuditFormat
) -> AsyncGenerator[bytes, None]:
    if fmt is AuditFormat.CSV:
        yield csv_cells.line(COLUMNS)
    after, upto = 0, None
    while True:
        async with sessions() as session:
            if upto is None:
                upto = await service.head_seq(session)
            events = await service.events_after(session, flt, after=after, upto=upto, limit=BATCH)
        for piece in pieces(_encode(event, fmt) for event in events):
            yield piece
        if len(events) < BATCH:
            return
        after = events[-1].seq


def _encode(event: AuditEvent, fmt: AuditFormat) -> bytes:
    record = AuditEventRead.model_validate(event).model_dump(mode="json")
    if fmt is AuditFormat.JSONL:
        return orjson.dumps(record) + b"\n"
    record["details"] = orjson.dumps(record["details"]).decode()
    return csv_cells.line("" if record[name] is None else str(record[name]) for name in COLUMNS)
