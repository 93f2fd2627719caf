"""One device's health reads as the API answers them, shared by its routes and the dashboard's
fragments: the device found in a short read transaction, its BMC asked with none held, and a
sensor read's verdict stored (`service.record`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import State

from agents.protocol import HealthRead, HealthReport
from app.context import RequestContext
from app.db import utcnow
from app.fleetlink.hub import AgentHub
from app.health import fleet, inventory, service
from app.health.schemas import EventsRead, HealthVerdict, InventoryRead, SensorsRead
from app.identity.models import Role
from app.inventory.devices import device_and_site
from app.inventory.models import ControlPath, HealthStatus
from app.uow import unit_of_work
from app.vault import Vault


@dataclass(frozen=True)
class Central:
    """What a read needs of the running central: its sessions, its agents and its vault."""

    sessions: async_sessionmaker[AsyncSession]
    write_sessions: async_sessionmaker[AsyncSession]
    hub: AgentHub
    vault: Vault

    @classmethod
    def of(cls, state: State) -> Central:
        """The app's own (its lifespan set them on `app.state`)."""
        return cls(state.sessions, state.write_sessions, state.agents, state.vault)


async def ask(
    central: Central, ctx: RequestContext, device: str, read: HealthRead, role: Role, what: str
) -> tuple[service.Machine, HealthReport]:
    """Find the device (a short read transaction), then ask its BMC (none held)."""
    async with unit_of_work(central.sessions) as session:
        machine = await service.machine(session, ctx, central.vault, device, role, what)
    return machine, await service.ask(central.hub, machine, read)


async def sensors(central: Central, ctx: RequestContext, device: str) -> SensorsRead:
    """Every sensor, and the verdict they make, stored as the device's health (a failed read
    is stored as `unknown` with why, then raised as DeviceUnavailable)."""
    machine, report = await ask(
        central, ctx, device, HealthRead.SENSORS, Role.VIEWER, "reading a device's sensors"
    )
    async with unit_of_work(central.write_sessions) as session:
        await service.record(session, [service.Seen(machine, report)], ctx.principal.actor, "read")
    data = service.answered(machine, report, "sensors")
    health, reasons = service.verdict(data.sensors)
    return SensorsRead(
        device=machine.name,
        site=machine.site,
        path=report.path,
        read_at=utcnow(),
        health=health,
        reasons=reasons,
        sensors=list(data.sensors),
    )


async def events(central: Central, ctx: RequestContext, device: str, limit: int) -> EventsRead:
    """The newest `limit` entries of the event log."""
    machine, report = await ask(
        central, ctx, device, HealthRead.EVENTS, Role.VIEWER, "reading a device's event log"
    )
    data = service.answered(machine, report, "event log")
    return EventsRead(
        device=machine.name,
        site=machine.site,
        path=report.path,
        read_at=utcnow(),
        events=list(data.events[:limit]),
    )


async def frus(central: Central, ctx: RequestContext, device: str) -> InventoryRead:
    """The FRU data, and what copying it into the catalogue would change."""
    machine, report = await ask(
        central, ctx, device, HealthRead.INVENTORY, Role.VIEWER, "reading a device's inventory"
    )
    data = service.answered(machine, report, "inventory")
    async with unit_of_work(central.sessions) as session:
        changes = await inventory.changes(session, machine.device_id, data.inventory)
    return InventoryRead(
        device=machine.name,
        site=machine.site,
        path=report.path,
        read_at=utcnow(),
        frus=list(data.inventory),
        changes=changes,
    )


async def stored(session: AsyncSession, ctx: RequestContext, device: str) -> HealthVerdict:
    """The device's last stored verdict; never read says why (no BMC path, or not yet)."""
    found, site = await device_and_site(
        session, ctx, device, Role.VIEWER, "reading a device's health"
    )
    row = await session.scalar(select(HealthStatus).where(HealthStatus.device_id == found.id))
    has_bmc = await session.scalar(
        select(
            exists().where(
                ControlPath.device_id == found.id, ControlPath.kind.in_(service.HEALTH_PATHS)
            )
        )
    )
    return fleet.verdict(found.name, site.slug, row, bool(has_bmc))
