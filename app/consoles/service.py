"""Console session rows and their audit events; the live side is in `broker`."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from agents.protocol import CloseReason, ConsolePath, HostKeySeen
from app.audit.models import EventType
from app.audit.service import SYSTEM, Event, stage
from app.centrals.presence import Owners
from app.consoles.models import LIVE, LIVE_SQL, ConsoleSession, ConsoleStatus
from app.consoles.schemas import ConsoleRead
from app.context import RequestContext
from app.db import fit, utcnow
from app.errors import NotFound
from app.fleetlink.paths import console_paths
from app.identity.models import Role
from app.identity.principal import Principal
from app.inventory.devices import device_for
from app.inventory.models import ControlPath, Device, PathKind, Site
from app.vault import Vault
from app.webhooks import outbox

log = logging.getLogger(__name__)

API = "/api/v1"


async def target(session: AsyncSession, ctx: RequestContext, ref: str) -> tuple[Device, Site]:
    device = await device_for(session, ctx, ref, Role.OPERATOR, "console")
    site = await session.get(Site, device.site_id)
    assert site is not None
    return device, site


async def create(
    session: AsyncSession,
    ctx: RequestContext,
    vault: Vault,
    device: Device,
    site: Site,
    via: str,
    owner: str,
) -> tuple[ConsoleSession, list[ConsolePath]]:
    """The session row and its `console.requested` event, committed before the agent is asked;
    with the device's console paths for the agent. `owner` is the central that will hold it."""
    paths = await console_paths(session, vault, device, via)
    row = ConsoleSession(
        id=uuid.uuid4().hex,
        device_id=device.id,
        device_name=device.name,
        site_id=site.id,
        site=site.slug,
        via=via,
        status=ConsoleStatus.OPENING,
        message="",
        ticket=ctx.ticket,
        reason=ctx.reason,
        actor_kind=ctx.principal.actor.kind,
        actor_id=ctx.principal.actor.id,
        actor_name=ctx.principal.actor.name,
        bytes_in=0,
        bytes_out=0,
        owner_id=owner,
    )
    session.add(row)
    await session.flush()
    stage(session, event(ctx, EventType.CONSOLE_REQUESTED, row, via=via))
    return row, paths


def event(
    ctx: RequestContext | None, type_: EventType, row: ConsoleSession, outcome: str = "success",
    **details: Any,
) -> Event:  # fmt: skip
    """An audit event about a console session (by the caller, or by Rackhand itself)."""
    fields: dict[str, Any] = {
        "outcome": outcome,
        "target_type": "device",
        "target_id": row.device_id,
        "target_name": row.device_name,
        "site": row.site,
        "session_id": row.id,
        "details": details,
    }
    if ctx is None:
        return Event(type_, SYSTEM, ticket=row.ticket, reason=row.reason, **fields)
    caused = ctx.event(type_, **fields)
    caused.ticket = caused.ticket or row.ticket  # a session's events stay on its ticket
    caused.reason = caused.reason or row.reason
    return caused


async def get(session: AsyncSession, ctx: RequestContext, console_id: str) -> ConsoleSession:
    """A session at a site where the caller may use consoles (elsewhere it looks missing)."""
    row = await session.get(ConsoleSession, console_id[:32])
    if row is None or ctx.principal.role_at(row.site_id) is None:
        raise NotFound(f"no console session {console_id!r}; list them with GET {API}/consoles")
    return row


def admit(ctx: RequestContext, row: ConsoleSession) -> None:
    """Who may join a session's stream, and keep watching it: an operator at its site."""
    if ctx.principal.role_at(row.site_id) is None:
        raise NotFound(f"no open console session {row.id!r}")
    ctx.require(Role.OPERATOR, row.site_id, what="console", target_type="device",
                target_id=row.device_id, target_name=row.device_name, site=row.site)  # fmt: skip


async def listing(
    session: AsyncSession,
    ctx: RequestContext,
    status: ConsoleStatus | None,
    device: str | None,
    site: str | None = None,
    limit: int = 500,
) -> list[ConsoleSession]:
    """Sessions at the caller's sites, newest first; `site` is a slug (one the caller cannot
    see simply matches nothing, as a missing one)."""
    query = select(ConsoleSession).order_by(ConsoleSession.created_at.desc()).limit(limit)
    sites = ctx.principal.visible_site_ids()
    if sites is not None:
        query = query.where(ConsoleSession.site_id.in_(sorted(sites)))
    if status is not None:
        query = query.where(ConsoleSession.status == status)
    if device is not None:
        query = query.where(ConsoleSession.device_name == device)
    if site is not None:
        query = query.where(ConsoleSession.site == site)
    return list(await session.scalars(query))


async def recordings(
    session: AsyncSession, ctx: RequestContext, device: Device, limit: int
) -> list[ConsoleSession]:
    """The device's closed sessions that have a recording, newest first, among the caller's
    sites (as `GET /consoles?device=&status=closed` lists them). The caller has found `device`
    through the ctx's checks."""
    query = (
        select(ConsoleSession)
        .where(
            ConsoleSession.device_id == device.id,
            ConsoleSession.status == ConsoleStatus.CLOSED,
            ConsoleSession.recording.is_not(None),
        )
        .order_by(ConsoleSession.created_at.desc())
        .limit(limit)
    )
    sites = ctx.principal.visible_site_ids()
    if sites is not None:
        query = query.where(ConsoleSession.site_id.in_(sorted(sites)))
    return list(await session.scalars(query))


def closer_role(row: ConsoleSession, actor: str) -> Role:
    """The role that closes a session: its opener needs an operator's, anyone else an admin's
    at its site. One rule for `DELETE /consoles/{id}` and the page's Close button."""
    return Role.OPERATOR if row.actor_name == actor else Role.ADMIN


def may_close(principal: Principal, row: ConsoleSession) -> bool:
    """Whether `require_close` would let this caller close the session."""
    return principal.allows(closer_role(row, principal.actor.name), row.site_id)


def require_close(ctx: RequestContext, row: ConsoleSession) -> None:
    """Refuse (audited) a caller who may not close the session."""
    if closer_role(row, ctx.principal.actor.name) is Role.ADMIN:
        ctx.require(Role.ADMIN, row.site_id, what="closing another user's console",
                    target_type="device", target_id=row.device_id, target_name=row.device_name,
                    site=row.site)  # fmt: skip
    ctx.require(Role.OPERATOR, row.site_id, what="console", site=row.site)


async def live_per_site(session: AsyncSession, ctx: RequestContext) -> Counter[int]:
    """Open (or opening) console sessions per site id, among the caller's sites, as
    `GET /consoles?status=open` lists them; one GROUP BY, for the overview."""
    query = (
        select(ConsoleSession.site_id, func.count())
        .where(ConsoleSession.status.in_(LIVE))
        .group_by(ConsoleSession.site_id)
    )
    sites = ctx.principal.visible_site_ids()
    if sites is not None:
        query = query.where(ConsoleSession.site_id.in_(sorted(sites)))
    counts: Counter[int] = Counter()
    for site_id, count in await session.execute(query):
        counts[site_id] = count
    return counts


async def last_attempts(
    session: AsyncSession, device: Device, limit: int = 20
) -> list[ConsoleSession]:
    """The device's latest console sessions, newest first: what its console paths last did
    (the session's `path` is the kind that attached; a failed one says why). The caller has
    found `device` through the ctx's checks."""
    query = (
        select(ConsoleSession)
        .where(ConsoleSession.device_id == device.id)
        .order_by(ConsoleSession.created_at.desc())
        .limit(limit)
    )
    return list(await session.scalars(query))


def to_read(row: ConsoleSession) -> ConsoleRead:
    live = row.status in LIVE
    return ConsoleRead(
        id=row.id,
        device=row.device_name,
        site=row.site,
        via=row.via,
        path=row.path,
        endpoint=row.endpoint,
        status=row.status,
        message=row.message,
        ticket=row.ticket,
        opened_by=row.actor_name,
        created_at=row.created_at,
        closed_at=row.closed_at,
        close_reason=row.close_reason,
        recording_sha256=row.recording_sha256,
        recording_bytes=row.recording_bytes,
        stream=f"{API}/consoles/{row.id}/stream" if live else None,
    )


async def _locked(session: AsyncSession, console_id: str) -> ConsoleSession:
    """The row as stored now, locked until the commit (PostgreSQL): a recovery by another
    central waits, then sees what this transaction wrote."""
    row = await session.scalar(
        select(ConsoleSession)
        .where(ConsoleSession.id == console_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


async def mark_open(
    session: AsyncSession, console_id: str, path: str, endpoint: str, recording: str
) -> ConsoleSession:
    row = await _locked(session, console_id)
    if row.status is not ConsoleStatus.OPENING:  # sealed meanwhile (its central taken for gone)
        return row
    row.status, row.path, row.endpoint, row.recording = (
        ConsoleStatus.OPEN,
        path,
        fit(endpoint, ConsoleSession.endpoint),  # a 253-character host name and its port
        recording,
    )
    stage(session, event(None, EventType.CONSOLE_OPENED, row, path=path, endpoint=endpoint))
    return row


async def mark_closed(
    session: AsyncSession,
    console_id: str,
    *,
    failed: bool,
    reason: CloseReason,
    message: str,
    closed_by: RequestContext | None,
    recording: tuple[str, int] | None,
    bytes_in: int,
    bytes_out: int,
) -> ConsoleSession:
    """Close the row and write the event that seals it (with the recording's hash); a session
    sealed already (ended as `lost` by another central) keeps its end and gets no second one."""
    row = await _locked(session, console_id)
    if row.status not in LIVE:
        log.warning(
            "console session %s had already ended (%s); not sealed again", row.id, row.close_reason
        )
        return row
    row.status = ConsoleStatus.FAILED if failed else ConsoleStatus.CLOSED
    row.closed_at = utcnow()
    row.close_reason = reason
    row.message = message
    row.bytes_in, row.bytes_out = bytes_in, bytes_out
    details: dict[str, Any] = {"reason": reason, "message": message}
    if recording is not None:
        row.recording_sha256, row.recording_bytes = recording
        details |= {
            "recording": row.recording,
            "sha256": recording[0],
            "size": recording[1],
            "bytes_out": bytes_out,
            "bytes_in": bytes_in,
        }
    kind = EventType.CONSOLE_FAILED if failed else EventType.CONSOLE_CLOSED
    stage(session, event(closed_by, kind, row, "failure" if failed else "success", **details))
    await outbox.console_closed(session, row)  # webhooks, in this transaction
    return row


async def abandon_open(session: AsyncSession, owners: Owners) -> int:
    """Sessions whose central is gone: closed as `lost` (the device session went with it).
    Sessions of a live central, this one included, are its own to close."""
    rows = list(
        await session.scalars(
            select(ConsoleSession)
            .where(text(f"console_session.{LIVE_SQL}"), owners.gone(ConsoleSession.owner_id))
            .with_for_update()
        )
    )
    for row in rows:
        row.status, row.closed_at = ConsoleStatus.CLOSED, utcnow()
        row.close_reason = CloseReason.LOST
        row.message = f"{owners.why(row.owner_id)} while the session was open"
        stage(
            session, event(None, EventType.CONSOLE_CLOSED, row, "failure", reason=CloseReason.LOST)
        )
        await outbox.console_closed(session, row)
    return len(rows)


async def pin_host_key(session: AsyncSession, seen: HostKeySeen, sites: set[str]) -> list[str]:
    """Trust on first use: pin the key on every ssh path to that address that has none yet, at
    the sites whose orders sent the agent there (branches reuse addresses: an agent's word
    about 10.0.0.5:22 is about its own site's box only)."""
    rows = await session.execute(
        select(ControlPath, Device, Site)
        .join(Device, ControlPath.device_id == Device.id)
        .join(Site, Device.site_id == Site.id)
        .where(
            ControlPath.kind == PathKind.SSH,
            ControlPath.address == seen.address,
            ControlPath.port == seen.port,
            Site.slug.in_(sorted(sites)),
        )
    )
    pinned = []
    for path, device, site in rows:
        if path.options.get("host_key"):
            continue
        path.options = {**path.options, "host_key": seen.fingerprint}
        pinned.append(device.name)
        stage(
            session,
            Event(
                EventType.SSH_HOST_KEY_PINNED,
                SYSTEM,
                target_type="device",
                target_id=device.id,
                target_name=device.name,
                site=site.slug,
                details={"path": path.id, "endpoint": f"{seen.address}:{seen.port}",
                         "fingerprint": seen.fingerprint},
            ),
        )  # fmt: skip
    return pinned
