"""Many devices' health at once: the fleet read (`GET /health`) and the health poll share it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agents.protocol import Health, HealthRead
from app.audit.service import Actor
from app.errors import InvalidInput
from app.fleetlink.hub import AgentHub
from app.fleetlink.paths import power_paths
from app.health import service
from app.health.schemas import HealthVerdict
from app.health.service import HEALTH_PATHS, Machine, Seen
from app.inventory.devices import DeviceFilter, filtered_query
from app.inventory.models import ControlPath, Device, DeviceStatus, HealthStatus, Site
from app.uow import unit_of_work
from app.vault import Vault

log = logging.getLogger(__name__)

AT_ONCE = 64  # reads out at once, as FreeIPMI's default fan-out
_BATCH = 200  # verdicts stored per transaction
NO_BMC = "no BMC path (ipmi or redfish) to read its health from"
_CHUNK = 5000
_WITH_BMC = select(ControlPath.device_id).where(ControlPath.kind.in_(HEALTH_PATHS))


@dataclass(frozen=True)
class Matched:
    device_id: int
    name: str
    site_id: int
    site: str


async def matched(session: AsyncSession, flt: DeviceFilter, most: int) -> list[Matched]:
    """The devices the filter picks, in name order; more than `most` is refused."""
    query = (await filtered_query(session, flt)).order_by(Device.name).limit(most + 1)
    rows = (await session.execute(query)).all()
    if len(rows) > most:
        raise InvalidInput(
            f"the selector and filters match more than {most:,} devices; narrow them (a site, "
            "a rack, a node range) or take the stored verdicts with cached=true"
        )
    return [Matched(device.id, device.name, device.site_id, slug) for device, slug, *_ in rows]


async def machines(
    session: AsyncSession, vault: Vault, devices: Sequence[Matched]
) -> list[Machine]:
    """Those of `devices` with a BMC path, their paths opened."""
    paths = await power_paths(session, vault, [one.device_id for one in devices], HEALTH_PATHS)
    return [
        Machine(one.device_id, one.name, one.site_id, one.site, tuple(paths[one.device_id]))
        for one in devices
        if one.device_id in paths
    ]


async def read(
    hub: AgentHub,
    write_sessions: async_sessionmaker[AsyncSession],
    machines: Sequence[Machine],
    actor: Actor,
    by: str,
    slots: asyncio.Semaphore,
    *,
    within: float = service.READ_TIMEOUT,
) -> None:
    """Read each machine's sensors as background work (behind what people asked of single
    devices), as many at once as `slots` lets (one semaphore for the whole central: the poll
    and every fleet read share it), and store the verdicts in batches as the answers come (a
    slow BMC holds back no one's verdict but its own)."""

    async def one(machine: Machine) -> Seen:
        async with slots:
            report = await service.ask(
                hub, machine, HealthRead.SENSORS, within=within, background=True
            )
        return Seen(machine, report)

    pending = [asyncio.create_task(one(machine)) for machine in machines]
    batch: list[Seen] = []
    try:
        for done in asyncio.as_completed(pending):
            batch.append(await done)
            if len(batch) >= _BATCH:
                await _store(write_sessions, batch, actor, by)
                batch = []
        await _store(write_sessions, batch, actor, by)
    finally:
        for task in pending:
            task.cancel()


async def _store(
    write_sessions: async_sessionmaker[AsyncSession], batch: list[Seen], actor: Actor, by: str
) -> None:
    if not batch:
        return
    try:
        async with unit_of_work(write_sessions) as session:
            await service.record(session, batch, actor, by)
    except Exception:
        log.exception("storing %d health verdicts failed; they are dropped", len(batch))


async def verdicts(session: AsyncSession, devices: Sequence[Matched]) -> list[HealthVerdict]:
    """Each device's stored verdict; a device never read is `unknown`, and says why."""
    stored: dict[int, HealthStatus] = {}
    with_bmc: set[int] = set()
    ids = [one.device_id for one in devices]
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = await session.scalars(select(HealthStatus).where(HealthStatus.device_id.in_(chunk)))
        stored |= {row.device_id: row for row in rows}
        with_bmc |= set(
            await session.scalars(
                select(Device.id).where(Device.id.in_(chunk), Device.id.in_(_WITH_BMC))
            )
        )
    return [
        verdict(one.name, one.site, stored.get(one.device_id), one.device_id in with_bmc)
        for one in devices
    ]


def verdict(name: str, site: str, row: HealthStatus | None, has_bmc: bool = True) -> HealthVerdict:
    if row is None:
        message = (
            "never read: no health poll or sensor read has reached its BMC yet"
            if has_bmc
            else NO_BMC
        )
        return HealthVerdict(
            device=name,
            site=site,
            health=Health.UNKNOWN,
            reasons=[],
            path=None,
            message=message,
            checked_at=None,
            changed_at=None,
        )
    return HealthVerdict(
        device=name,
        site=site,
        health=Health(row.health),
        reasons=row.reasons,
        path=row.path,
        message=row.message,
        checked_at=row.checked_at,
        changed_at=row.changed_at,
    )


async def site_machines(session: AsyncSession, vault: Vault, site_id: int) -> list[Machine]:
    """A site's devices with a BMC path, for the health poll."""
    slug = await session.scalar(select(Site.slug).where(Site.id == site_id))
    rows = (
        await session.execute(
            select(Device.id, Device.name).where(
                Device.site_id == site_id,
                Device.status != DeviceStatus.DECOMMISSIONED,
                Device.id.in_(_WITH_BMC),
            )
        )
    ).all()
    devices = [Matched(device_id, name, site_id, slug or "") for device_id, name in rows]
    return await machines(session, vault, devices)
