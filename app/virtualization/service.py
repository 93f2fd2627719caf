"""Guest discovery: a hypervisor's domains become `vm` devices, keyed by the domain's UUID.

A sync asks an agent of the host's site for the host's domains (no transaction is held while
the host answers), then writes in one transaction: guests new to the catalogue are created
(named after the domain unless that name is taken, docs/hypervisors.md "Names"), known ones
are updated (a domain that moved here from another host keeps its device and history), and the
host's guests it no longer lists are marked gone, not deleted. Every change is audited.
"""

from __future__ import annotations

import asyncio
import re
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agents.protocol import Guest, GuestsOrder, GuestsReport, HostPath, PowerState, TaskStatus
from app.audit.models import EventType
from app.audit.service import SYSTEM, stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import DeviceUnavailable, InvalidInput
from app.fleetlink.hub import AgentHub
from app.fleetlink.paths import host_path
from app.identity.models import Role
from app.inventory.devices import device_and_site
from app.inventory.models import ControlPath, Device, DeviceKind, PathKind, Site
from app.jobs.engine import upsert_power
from app.vault import Vault
from app.virtualization.models import Guest as GuestRow
from app.virtualization.schemas import GuestChange, SyncResult

SYNC_TIMEOUT = 60.0  # s for the host to list its guests
ANSWER_GRACE = 30.0  # s more for the agent's answer (it may queue the order a while)
_NOT_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_FIELDS = ("domain", "state", "vcpus", "memory_mib", "autostart")


@dataclass(frozen=True)
class Host:
    """The hypervisor being synced, read before its guests are asked for."""

    device_id: int
    name: str
    site_id: int
    site: str
    path: HostPath


async def host_for(session: AsyncSession, ctx: RequestContext, vault: Vault, ref: str) -> Host:
    """The hypervisor `ref`, where the caller may operate (elsewhere it looks missing)."""
    device, site = await device_and_site(
        session, ctx, ref, Role.OPERATOR, "syncing a hypervisor's guests"
    )
    if device.kind is not DeviceKind.HYPERVISOR:
        raise InvalidInput(
            f"{device.name} is a {device.kind}, not a hypervisor: only hypervisor devices have "
            "guests to sync"
        )
    return Host(device.id, device.name, site.id, site.slug, await host_path(session, vault, device))


async def ask(hub: AgentHub, host: Host) -> tuple[Guest, ...]:
    """The host's domains, as an agent of its site lists them; DeviceUnavailable if not."""
    order = GuestsOrder(uuidlib.uuid4().hex, host.name, host.site, host.path, SYNC_TIMEOUT)
    try:  # an agent that queues the order behind its site's work still answers in time
        async with asyncio.timeout(SYNC_TIMEOUT + ANSWER_GRACE):
            report: GuestsReport = await hub.guests(order)
    except TimeoutError:
        raise DeviceUnavailable(
            f"the guests of {host.name} could not be listed: no answer from the site's agent "
            f"within {SYNC_TIMEOUT + ANSWER_GRACE:g} s"
        ) from None
    if report.status is not TaskStatus.SUCCEEDED:
        raise DeviceUnavailable(
            f"the guests of {host.name} could not be listed ({report.status}): {report.message}"
        )
    return report.guests


async def apply(
    session: AsyncSession,
    ctx: RequestContext,
    host: Host,
    guests: Sequence[Guest],
    *,
    dry_run: bool,
) -> SyncResult:
    """Bring the catalogue in line with what the host listed (or say what that would do)."""
    now = utcnow()
    listed = {guest.uuid.lower(): guest for guest in guests}
    known = await _known(session, list(listed))
    changes: list[GuestChange] = []
    for uuid, guest in listed.items():
        device, row = known.get(uuid, (None, None))
        if device is None:
            changes.append(await _create(session, host, guest, uuid, now))
        else:
            changes.append(await _update(session, ctx, host, device, row, guest, uuid, now))
    changes.extend(await _gone(session, host, set(listed), now))
    await upsert_power(session, [_power(change, host, now) for change in changes if change.power])
    result = SyncResult.of(host.name, dry_run, len(listed), changes)
    if dry_run:
        return result
    for change in changes:
        if change.action in ("created", "updated", "gone"):
            stage(session, _event(ctx, host, change))
    stage(
        session,
        ctx.event(
            EventType.HYPERVISOR_SYNCED,
            target_type="device",
            target_id=host.device_id,
            target_name=host.name,
            site=host.site,
            details=result.counts(),
        ),
    )
    return result


async def _known(
    session: AsyncSession, uuids: list[str]
) -> dict[str, tuple[Device, GuestRow | None]]:
    """Devices already standing for these domains: by their guest row, else by a libvirt path
    someone wrote by hand (adopted at this sync)."""
    found: dict[str, tuple[Device, GuestRow | None]] = {}
    if not uuids:
        return found
    rows = await session.execute(
        select(GuestRow, Device)
        .join(Device, Device.id == GuestRow.device_id)
        .where(GuestRow.uuid.in_(uuids))
    )
    for guest, device in rows:
        found[guest.uuid] = (device, guest)
    paths = await session.execute(
        select(ControlPath.domain, Device)
        .join(Device, Device.id == ControlPath.device_id)
        .where(ControlPath.kind == PathKind.LIBVIRT, func.lower(ControlPath.domain).in_(uuids))
        .order_by(ControlPath.id)
    )
    for domain, device in paths:
        found.setdefault(str(domain).lower(), (device, None))
    return found


async def _create(
    session: AsyncSession, host: Host, guest: Guest, uuid: str, now: datetime
) -> GuestChange:
    name = await _free_name(session, guest, uuid, host.name)
    device = Device(name=name, kind=DeviceKind.VM, site_id=host.site_id, parent_id=host.device_id)
    session.add(device)
    await session.flush()
    session.add(_path(device.id, host, guest, uuid))
    session.add(GuestRow(device_id=device.id, uuid=uuid, seen_at=now, **_facts(guest)))
    await session.flush()
    after = {"host": host.name, **_facts(guest)}
    return GuestChange(
        device=name, uuid=uuid, action="created", changes={k: [None, v] for k, v in after.items()},
        device_id=device.id, power=guest.power,
    )  # fmt: skip


async def _update(
    session: AsyncSession,
    ctx: RequestContext,
    host: Host,
    device: Device,
    row: GuestRow | None,
    guest: Guest,
    uuid: str,
    now: datetime,
) -> GuestChange:
    if device.site_id != host.site_id and (why := _stays(ctx, device)) is not None:
        shown = device.name if ctx.principal.allows(Role.VIEWER, device.site_id) else "?"
        return GuestChange(device=shown, uuid=uuid, action="skipped", message=why)
    if row is None and (other := await session.get(GuestRow, device.id)) is not None:
        return GuestChange(
            device=device.name, uuid=uuid, action="skipped",
            message=f"{device.name}'s libvirt path names domain {uuid}, but its last sync found "
            f"it as domain {other.uuid}; fix the path's domain (or delete it) and sync again",
        )  # fmt: skip
    changed: dict[str, list[Any]] = {}
    if device.parent_id != host.device_id:
        before = await session.scalar(select(Device.name).where(Device.id == device.parent_id))
        changed["host"] = [before, host.name]
        device.parent_id = host.device_id
    if device.site_id != host.site_id:
        before = await session.scalar(select(Site.slug).where(Site.id == device.site_id))
        changed["site"] = [before, host.site]
        device.site_id, device.rack_id, device.position_u = host.site_id, None, None
    if row is None:
        row = GuestRow(device_id=device.id, uuid=uuid, seen_at=now, **_facts(guest))
        session.add(row)
        changed["guest"] = [None, "adopted"]
    else:
        if row.domain != guest.name and device.name == row.domain:
            name = await _free_name(session, guest, uuid, host.name, keep=device.name)
            if name != device.name:
                changed["name"] = [device.name, name]
                device.name = name
        for field, value in _facts(guest).items():
            if getattr(row, field) != value:
                changed[field] = [getattr(row, field), value]
                setattr(row, field, value)
        if row.gone_at is not None:
            changed["gone_at"] = [row.gone_at.isoformat(), None]
            row.gone_at = None
        row.seen_at = now
    await _point_path(session, device.id, host, guest, uuid, changed)
    await session.flush()
    action = "updated" if changed else "unchanged"
    return GuestChange(
        device=device.name, uuid=uuid, action=action, changes=changed, device_id=device.id,
        power=guest.power,
    )  # fmt: skip


async def _point_path(
    session: AsyncSession,
    device_id: int,
    host: Host,
    guest: Guest,
    uuid: str,
    changed: dict[str, list[Any]],
) -> None:
    """The device's libvirt path goes through the host that lists it, by the domain's name."""
    path = await session.scalar(
        select(ControlPath)
        .where(ControlPath.device_id == device_id, ControlPath.kind == PathKind.LIBVIRT)
        .order_by(ControlPath.priority, ControlPath.id)
        .limit(1)
    )
    if path is None:
        session.add(_path(device_id, host, guest, uuid))
        changed["path"] = [None, f"libvirt via {host.name}"]
        return
    if path.via_device_id != host.device_id or path.domain != uuid:
        path.via_device_id, path.domain = host.device_id, uuid
        changed.setdefault("path", [None, f"libvirt via {host.name}"])
    if path.options.get("name") != guest.name:
        path.options = {**path.options, "name": guest.name}


async def _gone(
    session: AsyncSession, host: Host, listed: set[str], now: datetime
) -> list[GuestChange]:
    """The host's guests it did not list: marked gone (history kept), power unknown."""
    rows = await session.execute(
        select(GuestRow, Device)
        .join(Device, Device.id == GuestRow.device_id)
        .where(Device.parent_id == host.device_id, GuestRow.gone_at.is_(None))
    )
    gone = []
    for row, device in rows:
        if row.uuid in listed:
            continue
        row.gone_at = now
        gone.append(
            GuestChange(
                device=device.name,
                uuid=row.uuid,
                action="gone",
                changes={"gone_at": [None, now.isoformat()]},
                device_id=device.id,
                power=PowerState.UNKNOWN,
                message=f"{host.name} no longer lists domain {row.domain}: deleted, or moved "
                "to a host not synced yet",
            )
        )
    await session.flush()
    return gone


async def _free_name(
    session: AsyncSession, guest: Guest, uuid: str, host: str, keep: str | None = None
) -> str:
    """The domain's name if free; else `<domain>.<host>`; else `<domain>-<uuid's first 8>`."""
    base = _NOT_NAME.sub("-", guest.name).strip("-._")[:100] or "guest"
    for name in (base, f"{base}.{host}"[:128], f"{base}-{uuid[:8]}"):
        if name == keep:
            return name
        taken = await session.scalar(select(Device.id).where(Device.name == name))
        if taken is None:
            return name
    return f"{base}-{uuid}"[:128]


def _path(device_id: int, host: Host, guest: Guest, uuid: str) -> ControlPath:
    return ControlPath(
        device_id=device_id,
        kind=PathKind.LIBVIRT,
        via_device_id=host.device_id,
        domain=uuid,
        options={"name": guest.name},
        priority=10,
    )


def _facts(guest: Guest) -> dict[str, Any]:
    return {
        "domain": guest.name[:128],
        "state": guest.state[:32],
        "vcpus": guest.vcpus,
        "memory_mib": guest.memory_mib,
        "autostart": guest.autostart,
    }


def _power(change: GuestChange, host: Host, now: datetime) -> dict[str, Any]:
    listed = change.action != "gone"
    return {
        "device_id": change.device_id,
        "state": change.power,
        "reachable": listed,
        "path": "libvirt",
        "message": f"as {host.name} listed it" if listed else change.message,
        "checked_at": now,
        "last_seen_at": now if listed else None,
        "changed_at": now,
    }


def _stays(ctx: RequestContext, device: Device) -> str | None:
    """Why a guest listed by a host at another site does not move there, if it does not.

    Only a person who operates both sites moves it, having asked: a host that claims another
    site's guest (its UUID copied, or a host taken over) must not pull it, and the orders
    for it, to its own site's agent unseen; so the periodic sync never moves one.
    """
    if ctx.principal.actor == SYSTEM:
        return (
            f"{device.name} is at another site: a periodic sync never moves a guest across "
            "sites; a sync asked by someone who operates both sites does"
        )
    if not ctx.principal.allows(Role.OPERATOR, device.site_id):
        return (
            "the guest's device is at a site where you may not change it; a sync by someone "
            "who operates both sites moves it here"
        )
    return None


def _event(ctx: RequestContext, host: Host, change: GuestChange) -> Any:
    kind = {
        "created": EventType.GUEST_CREATED,
        "updated": EventType.GUEST_UPDATED,
        "gone": EventType.GUEST_GONE,
    }[change.action]
    return ctx.event(
        kind,
        target_type="device",
        target_id=change.device_id,
        target_name=change.device,
        site=host.site,
        details={"uuid": change.uuid, "host": host.name, "changes": change.changes},
    )
