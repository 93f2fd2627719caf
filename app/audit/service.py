"""Append, read and verify the audit log.

Events are staged on the session during a unit of work and appended just before it commits
(`append_staged`), so they share the change's transaction and hold the chain head only
briefly. The head row is locked by an UPDATE: that serialises appenders on PostgreSQL across
processes, and on SQLite the write transaction already holds the database's write lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Text,
    bindparam,
    cast,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.chain import HASHED_FIELDS, format_at, link
from app.audit.models import GENESIS, AuditEvent, AuditHead, EventType, Outcome
from app.db import fit, utcnow
from app.errors import InvalidInput
from app.inventory.models import Site

if TYPE_CHECKING:
    from app.context import RequestContext

_STAGED = "rackhand.audit.staged"
_LENGTHS: dict[str, int] = {
    column.name: column.type.length
    for column in AuditEvent.__table__.columns
    if isinstance(column.type, String) and column.type.length and column.name in HASHED_FIELDS
}
SECRET_KEYS = frozenset({"secret", "password", "token", "secret_ciphertext"})


@dataclass(frozen=True)
class Actor:
    """Who acts: a user, an API token, the system itself, or nobody yet (a failed login)."""

    kind: str
    id: int | None
    name: str


SYSTEM = Actor("system", None, "rackhand")


@dataclass
class Event:
    type: EventType
    actor: Actor
    outcome: str = "success"
    target_type: str | None = None
    target_id: int | None = None
    target_name: str | None = None
    site: str | None = None
    ticket: str | None = None
    reason: str | None = None
    source_ip: str | None = None
    request_id: str | None = None
    job_id: str | None = None
    session_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def redact(value: Any) -> Any:
    """Secrets never reach the log: any key that names one is replaced by "set"/None.

    An enum member under such a key is a secret's state (`"secret": "dropped"`), never a
    secret, and is kept.
    """
    shown = repr(value)
    if not any(f"'{key}'" in shown for key in SECRET_KEYS):  # C-fast check; walk only if needed
        return value
    return _redact(value)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _hidden(item) if key in SECRET_KEYS else _redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


def _hidden(item: Any) -> Any:
    if isinstance(item, Enum):
        return item
    return "set" if item else None


def stage(session: AsyncSession, event: Event) -> None:
    """Record `event` with the session's transaction; it is written when that commits."""
    session.info.setdefault(_STAGED, []).append(event)


async def append_staged(session: AsyncSession) -> None:
    events: list[Event] = session.info.pop(_STAGED, [])
    if events:
        await append(session, events)


async def append(session: AsyncSession, events: list[Event]) -> None:
    """Chain and insert events now, in the session's transaction (the head stays locked)."""
    head = (
        await session.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(seq=AuditHead.seq + len(events))
            .returning(AuditHead.seq, AuditHead.hash)
        )
    ).one_or_none()
    if head is None:
        raise RuntimeError("audit_head is missing; the database was not migrated")
    last_seq, prev_hash = head
    seq = last_seq - len(events)
    rows = []
    now = utcnow()
    stamp = format_at(now)
    for event in events:
        seq += 1
        fields: dict[str, Any] = {
            "seq": seq,
            "at": now,
            "type": event.type,
            "outcome": event.outcome,
            "actor_kind": event.actor.kind,
            "actor_id": event.actor.id,
            "actor_name": event.actor.name,
            "source_ip": event.source_ip,
            "target_type": event.target_type,
            "target_id": event.target_id,
            "target_name": event.target_name,
            "site": event.site,
            "ticket": event.ticket,
            "reason": event.reason,
            "request_id": event.request_id,
            "job_id": event.job_id,
            "session_id": event.session_id,
            "details": orjson.dumps(redact(event.details), option=orjson.OPT_SORT_KEYS),
        }
        for name, length in _LENGTHS.items():  # a caller's over-long name must not cost the event
            value = fields[name]
            if isinstance(value, str) and len(value) > length:
                fields[name] = fit(value, AuditEvent.__table__.c[name])
        details: bytes = fields["details"]
        hashed = fields | {"at": stamp, "details": orjson.Fragment(details)}
        digest = link(prev_hash, [hashed[name] for name in HASHED_FIELDS])
        rows.append(fields | {"details": details.decode(), "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    # Core insert: the ORM's bulk path costs more per row than the hashing does.
    await session.execute(insert(AuditEvent.metadata.tables["audit_event"]), rows)
    await session.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=prev_hash))


@dataclass
class AuditFilter:
    actor: str | None = None
    device: str | None = None
    site: str | None = None
    ticket: str | None = None
    type: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None
    visible_sites: set[str] | None = None  # None: every site and site-less events


async def audit_filter(
    session: AsyncSession,
    ctx: RequestContext,
    *,
    actor: str | None = None,
    device: str | None = None,
    site: str | None = None,
    ticket: str | None = None,
    type: str | None = None,
    outcome: Outcome | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditFilter:
    """The caller's filter, narrowed to what they may read (the API and the audit page both
    build it here): a site-scoped caller reads only the events of their sites, never
    site-less ones."""
    check_range(since, until)
    visible: set[str] | None = None
    ids = ctx.principal.visible_site_ids()
    if ids is not None:
        visible = set(await session.scalars(select(Site.slug).where(Site.id.in_(ids))))
    return AuditFilter(
        actor=actor,
        device=device,
        site=site,
        ticket=ticket,
        type=type,
        outcome=outcome,
        since=since,
        until=until,
        visible_sites=visible,
    )


def filtered(flt: AuditFilter) -> Select[AuditEvent]:
    query = select(AuditEvent)
    if flt.actor is not None:
        query = query.where(AuditEvent.actor_name == flt.actor)
    if flt.device is not None:
        query = query.where(
            AuditEvent.target_type == "device", AuditEvent.target_name == flt.device
        )
    if flt.site is not None:
        query = query.where(AuditEvent.site == flt.site)
    if flt.ticket is not None:
        query = query.where(AuditEvent.ticket == flt.ticket)
    if flt.type is not None:
        if flt.type.endswith(".*"):
            query = query.where(AuditEvent.type.startswith(flt.type[:-1], autoescape=True))
        else:
            query = query.where(AuditEvent.type == flt.type)
    if flt.outcome is not None:
        query = query.where(AuditEvent.outcome == flt.outcome.value)
    if flt.since is not None:
        query = query.where(AuditEvent.at >= flt.since)
    if flt.until is not None:
        query = query.where(AuditEvent.at < flt.until)
    if flt.visible_sites is not None:
        query = query.where(AuditEvent.site.in_(sorted(flt.visible_sites)))
    return query


async def list_events(
    session: AsyncSession, flt: AuditFilter, *, limit: int, before: int | None
) -> tuple[list[AuditEvent], int | None]:
    """Newest first; the cursor is the last id seen."""
    query = filtered(flt)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    rows = list(await session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


async def head_seq(session: AsyncSession) -> int:
    """The last event's seq: every event up to it is committed (appends hold the head)."""
    return int(await session.scalar(select(AuditHead.seq)) or 0)


async def events_after(
    session: AsyncSession, flt: AuditFilter, *, after: int, upto: int, limit: int
) -> list[AuditEvent]:
    """Oldest first: the next `limit` events with `after < seq <= upto` (a keyset page)."""
    query = filtered(flt).where(AuditEvent.seq > after, AuditEvent.seq <= upto)
    return list(await session.scalars(query.order_by(AuditEvent.seq).limit(limit)))


def _verify_columns(dialect: str) -> list[ColumnElement[Any]]:
    """The hashed fields in HASHED_FIELDS order as the chain saw them (`at` as its canonical
    text, details as JSON text), then id, prev_hash and hash. Reading them this way skips date
    and JSON processing per row, which was most of the cost."""
    at: ColumnElement[Any]
    if dialect == "postgresql":
        at = func.to_char(func.timezone("UTC", AuditEvent.at), "YYYY-MM-DD HH24:MI:SS.US")
    else:
        at = cast(AuditEvent.at, Text)
    special = {"at": at, "details": AuditEvent.details_json}
    hashed = [special.get(name, getattr(AuditEvent, name)) for name in HASHED_FIELDS]
    return [*hashed, AuditEvent.id, AuditEvent.prev_hash, AuditEvent.hash]


_SEQ = HASHED_FIELDS.index("seq")
_DETAILS = HASHED_FIELDS.index("details")
_ID, _PREV, _HASH = len(HASHED_FIELDS), len(HASHED_FIELDS) + 1, len(HASHED_FIELDS) + 2


@dataclass
class Verdict:
    ok: bool
    checked: int
    bad_id: int | None = None
    bad_seq: int | None = None
    reason: str = ""


async def verify(session: AsyncSession, batch: int = 20_000) -> Verdict:
    """Walk the chain in sequence; name the first event whose link or contents do not match.

    The next batch is requested before this one is hashed, so the database works meanwhile.
    """
    columns = _verify_columns(session.get_bind().dialect.name)
    connection = await session.connection()

    # Rows straight from the driver: SQLAlchemy's row processing was a third of the time.
    dialect = connection.dialect
    query = (
        select(*columns)
        .where(AuditEvent.seq > bindparam("after"))
        .order_by(AuditEvent.seq)
        .limit(bindparam("batch"))
    )
    compiled = query.compile(dialect=dialect)
    sql = str(compiled)
    order = compiled.positiontup or []
    driver: Any = (await connection.get_raw_connection()).driver_connection

    async def fetch(after: int) -> Sequence[Any]:
        values = compiled.construct_params({"after": after, "batch": batch})
        args = [values[name] for name in order]
        if dialect.name == "postgresql":
            rows: Sequence[Any] = await driver.fetch(sql, *args)
            return rows
        async with driver.execute(sql, args) as cursor:
            return list(await cursor.fetchall())

    prev_hash, expected_seq = GENESIS, 1
    rows = await fetch(0)
    while True:
        upcoming = asyncio.ensure_future(fetch(rows[-1][_SEQ])) if len(rows) == batch else None
        await asyncio.sleep(0)  # let the next query reach the database before hashing
        for row in rows:
            seq = row[_SEQ]
            if seq != expected_seq:
                if upcoming is not None:
                    await upcoming
                missing = "missing" if seq > expected_seq else "out of order"
                reason = f"expected event #{expected_seq} here, found #{seq} ({missing})"
                return Verdict(False, expected_seq - 1, row[_ID], seq, reason)
            values = list(row[:_ID])
            values[_DETAILS] = orjson.Fragment(values[_DETAILS])
            reason = ""
            if row[_PREV] != prev_hash:
                reason = "its prev_hash does not match the hash of the event before it"
            elif link(prev_hash, values) != row[_HASH]:
                reason = "its contents do not match its hash (the row was changed)"
            if reason:
                if upcoming is not None:
                    await upcoming
                return Verdict(False, expected_seq - 1, row[_ID], seq, reason)
            prev_hash = row[_HASH]
            expected_seq += 1
        if upcoming is None:
            break
        rows = await upcoming
        if not rows:
            break
    checked = expected_seq - 1
    head = (await session.execute(select(AuditHead.seq, AuditHead.hash))).one()
    if head.seq != checked or head.hash != prev_hash:
        reason = f"the chain ends at #{checked} but the head records #{head.seq}: events removed"
        return Verdict(False, checked, None, checked + 1, reason)
    return Verdict(True, checked)


def check_range(since: datetime | None, until: datetime | None) -> None:
    for name, moment in (("since", since), ("until", until)):
        try:
            if moment is not None:
                moment.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 with an offset: no such time in UTC
            message = f"`{name}` is out of range in UTC; give a year from 1 to 9999"
            raise InvalidInput(message) from None
    if since is not None and until is not None and since >= until:
        raise InvalidInput("`since` must be before `until`")


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Only the fields that changed, as {"before": {...}, "after": {...}}."""
    changed = [key for key in after if before.get(key) != after[key]]
    return {"before": {k: before.get(k) for k in changed}, "after": {k: after[k] for k in changed}}
