"""HTTP routes of hardware health: a device's sensors, verdict, event log and FRU inventory.

Each read asks the device's BMC through an agent of its site, with no transaction held while
it answers; a sensor read also stores the device's verdict (`service.record`).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Query, Request

from agents.protocol import Health, HealthRead
from app.audit.service import stage
from app.db import utcnow
from app.deps import own_transactions
from app.health import fleet, inventory, reads, service
from app.health.schemas import (
    ClearRequest,
    EventsRead,
    FleetHealth,
    HealthVerdict,
    InventoryApplied,
    InventoryRead,
    SensorsRead,
)
from app.identity.auth import Ctx
from app.identity.models import Role
from app.inventory.routes import FilterDep
from app.uow import unit_of_work

router = APIRouter(tags=["health"])
FRESH_AT_MOST = 2_000  # devices one fleet read asks; more must narrow or take the stored
STORED_AT_MOST = 100_000


def _central(request: Request) -> reads.Central:
    return reads.Central.of(request.app.state)


@router.get("/devices/{device}/sensors")
@own_transactions
async def read_sensors(request: Request, ctx: Ctx, device: str) -> SensorsRead:
    """Every sensor of the device's BMC: type, reading, unit, state and thresholds; the
    verdict they make is stored as the device's health."""
    return await reads.sensors(_central(request), ctx, device)


@router.get("/health")
@own_transactions
async def fleet_health(
    request: Request,
    ctx: Ctx,
    flt: FilterDep,
    cached: Annotated[
        bool, Query(description="the stored verdicts, without asking the BMCs")
    ] = False,
) -> FleetHealth:
    """The verdict of every device the selector and filters match (as GET /devices takes
    them): read from their sensors now, at most 64 at once, or as last stored (`cached`)."""
    state = request.app.state
    most = STORED_AT_MOST if cached else FRESH_AT_MOST
    async with unit_of_work(state.sessions) as session:
        matched = await fleet.matched(session, flt, most)
        machines = [] if cached else await fleet.machines(session, state.vault, matched)
    if machines:
        await fleet.read(
            state.agents, state.write_sessions, machines, ctx.principal.actor, "read",
            state.health_slots,
        )  # fmt: skip
    async with unit_of_work(state.sessions) as session:
        verdicts = await fleet.verdicts(session, matched)
    return FleetHealth(
        devices=verdicts,
        counts={health: sum(v.health is health for v in verdicts) for health in Health},
    )


@router.get("/devices/{device}/health")
@own_transactions
async def read_health(
    request: Request,
    ctx: Ctx,
    device: str,
    cached: Annotated[
        bool, Query(description="the last stored verdict, without asking the BMC")
    ] = False,
) -> HealthVerdict:
    """One verdict (ok, warning, critical, unknown) with the reasons: read from the sensors
    now, or as last stored (`cached`: by the health poll or an earlier read)."""
    state = request.app.state
    if not cached:
        await reads.sensors(_central(request), ctx, device)
    async with unit_of_work(state.sessions) as session:
        return await reads.stored(session, ctx, device)


@router.get("/devices/{device}/events")
@own_transactions
async def read_events(
    request: Request,
    ctx: Ctx,
    device: str,
    limit: Annotated[int, Query(ge=1, le=4096, description="the newest this many")] = 1000,
) -> EventsRead:
    """The BMC's system event log, decoded, newest first."""
    return await reads.events(_central(request), ctx, device, limit)


@router.post("/devices/{device}/events/clear")
@own_transactions
async def clear_events(
    request: Request, ctx: Ctx, device: str, body: ClearRequest | None = None
) -> EventsRead:
    """Clear the BMC's event log: read to its end and cleared under one reservation, so an
    entry logged meanwhile is never lost (the clear is refused instead). Answers with what
    the log held; audited with the ticket (the body's ticket and reason win over the
    headers)."""
    if body is not None:
        ctx = dataclasses.replace(
            ctx, ticket=body.ticket or ctx.ticket, reason=body.reason or ctx.reason
        )
    state = request.app.state
    async with unit_of_work(state.sessions) as session:
        machine = await service.machine(
            session, ctx, state.vault, device, Role.OPERATOR, "clearing a device's event log"
        )
    ctx.require_ticket(machine.site, machine.ticket_required, "clearing an event log")
    report = await service.ask(state.agents, machine, HealthRead.CLEAR_EVENTS)
    async with unit_of_work(state.write_sessions) as session:
        stage(session, service.cleared(ctx, machine, report))
    data = service.answered(machine, report, "event log")
    return EventsRead(
        device=machine.name,
        site=machine.site,
        path=report.path,
        read_at=utcnow(),
        events=list(data.events),
        cleared=True,
    )


@router.get("/devices/{device}/inventory")
@own_transactions
async def read_inventory(request: Request, ctx: Ctx, device: str) -> InventoryRead:
    """FRU data (board, product, chassis: manufacturer, part and serial numbers), and what
    copying it into the catalogue's vendor, model and serial would change."""
    return await reads.frus(_central(request), ctx, device)


@router.post("/devices/{device}/inventory/apply")
@own_transactions
async def apply_inventory(
    request: Request, ctx: Ctx, device: str, dry_run: bool = False
) -> InventoryApplied:
    """Copy the system FRU's manufacturer, product name and serial number into the catalogue's
    vendor, model and serial where they differ (or are empty); `dry_run` only says what would
    change. A catalogue change: admin of the site, audited as `device.updated`."""
    machine, report = await reads.ask(
        _central(request), ctx, device, HealthRead.INVENTORY, Role.ADMIN, "changing a device"
    )
    data = service.answered(machine, report, "inventory")
    async with unit_of_work(request.app.state.write_sessions) as session:
        changes = await inventory.apply(session, ctx, machine, data.inventory, dry_run=dry_run)
        if dry_run:
            await session.rollback()
    return InventoryApplied(device=machine.name, dry_run=dry_run, changes=changes)
