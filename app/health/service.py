"""Hardware health: reads of a device's BMC through an agent of its site, and the verdicts.

A read goes out as one `HealthOrder` over the device's BMC paths (ipmi, then redfish, in
priority order); no transaction is held while the BMC answers. Every sensor read leaves a
verdict (`health_status`): the worst sensor state, with one reason per sensor not ok, or
`unknown` with why when nothing could be read. A verdict that changes is a `health.changed`
audit event and a `device.health_changed` webhook (docs/health.md, "Verdicts").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from agents.protocol import (
    Health,
    HealthData,
    HealthOrder,
    HealthRead,
    HealthReport,
    Path,
    Sensor,
    SensorState,
    TaskStatus,
    Thresholds,
)
from app.audit.models import EventType, Outcome
from app.audit.service import Actor, Event, stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import DeviceUnavailable, InvalidInput
from app.fleetlink.hub import AgentHub
from app.fleetlink.paths import power_paths
from app.identity.models import Role
from app.inventory.devices import device_and_site
from app.inventory.models import Device, HealthStatus, PathKind
from app.vault import Vault
from app.webhooks import outbox

HEALTH_PATHS = (PathKind.IPMI, PathKind.REDFISH)
READ_TIMEOUT = 60.0  # s for the BMC (a cold SDR read of a large server takes a while)
ANSWER_GRACE = 30.0  # s more for the agent's answer (it may queue the order a while)


@dataclass(frozen=True)
class Machine:
    """A device whose BMC is to be read, with its paths opened."""

    device_id: int
    name: str
    site_id: int
    site: str
    paths: tuple[Path, ...]
    ticket_required: bool = False  # the site's rule for what changes a device


async def machine(
    session: AsyncSession, ctx: RequestContext, vault: Vault, ref: str, role: Role, what: str
) -> Machine:
    """The device `ref` where the caller holds `role` (elsewhere it looks missing), with its
    BMC paths; a device without one is told what to add."""
    device, site = await device_and_site(session, ctx, ref, role, what)
    paths = (await power_paths(session, vault, [device.id], HEALTH_PATHS)).get(device.id, [])
    if not paths:
        raise InvalidInput(
            f"{device.name} has no BMC path (ipmi or redfish) to read its health from; add one "
            f"with POST /api/v1/devices/{device.name}/paths"
        )
    return Machine(device.id, device.name, site.id, site.slug, tuple(paths), site.require_ticket)


async def ask(
    hub: AgentHub,
    machine: Machine,
    read: HealthRead,
    *,
    within: float = READ_TIMEOUT,
    background: bool = False,
) -> HealthReport:
    """The agent's answer; a failed report (never an exception) when there is none in time."""
    order = HealthOrder(
        uuid.uuid4().hex, machine.name, machine.site, read, machine.paths, within, background
    )
    try:  # an agent that queues the order behind its site's work still answers in time
        async with asyncio.timeout(within + ANSWER_GRACE):
            return await hub.health(order)
    except TimeoutError:
        said = f"no answer from the site's agent within {within + ANSWER_GRACE:g} s"
        return HealthReport(order.task_id, TaskStatus.TIMEOUT, message=said)


def answered(machine: Machine, report: HealthReport, what: str) -> HealthData:
    """The report's data; DeviceUnavailable (502) saying why when it has none."""
    if report.status is not TaskStatus.SUCCEEDED or report.data is None:
        raise DeviceUnavailable(
            f"the {what} of {machine.name} could not be read ({report.status}): {report.message}"
        )
    return report.data


def verdict(sensors: Sequence[Sensor]) -> tuple[Health, list[str]]:
    """The worst sensor state, and one reason per sensor that is not ok, worst first.

    A sensor that reads nothing (`not_present`) is no reason: an empty DIMM slot, a PSU bay
    left empty, or fans the BMC stops scanning while the machine is off. A BMC without a
    single sensor says nothing of the hardware: `unknown`.
    """
    if not sensors:
        return Health.UNKNOWN, ["the BMC reports no sensors"]
    bad = [sensor for sensor in sensors if sensor.state in _BAD]
    bad.sort(key=lambda sensor: sensor.state is not SensorState.CRITICAL)
    worst = _BAD[bad[0].state] if bad else Health.OK
    return worst, [reason(sensor) for sensor in bad]


_BAD = {SensorState.WARNING: Health.WARNING, SensorState.CRITICAL: Health.CRITICAL}


def reason(sensor: Sensor) -> str:
    """One line a person reads: "Fan2 critical: 0 RPM (lower critical 500 RPM)"."""
    said = f"{sensor.name} {sensor.state}"
    if sensor.reading is not None:
        value = f"{sensor.reading:g} {sensor.unit}".strip()
        crossed = _crossed(sensor.reading, sensor.thresholds, sensor.unit)
        return f"{said}: {value}" + (f" ({crossed})" if crossed else "")
    if sensor.states:
        return f"{said}: {', '.join(sensor.states)}"
    return said


def _crossed(value: float, thresholds: Thresholds | None, unit: str) -> str:
    """The threshold the reading is past, the most severe first."""
    if thresholds is None:
        return ""
    for name in _SEVERE_FIRST:
        limit = getattr(thresholds, name)
        if limit is None:
            continue
        past = value <= limit if name.startswith("lower") else value >= limit
        if past:
            return f"{THRESHOLD_WORDS[name]} {limit:g} {unit}".strip()
    return ""


THRESHOLD_WORDS = {  # as ipmitool and the IPMI spec say them (the dashboard too)
    "lower_non_recoverable": "lower non-recoverable",
    "upper_non_recoverable": "upper non-recoverable",
    "lower_critical": "lower critical",
    "upper_critical": "upper critical",
    "lower_non_critical": "lower non-critical",
    "upper_non_critical": "upper non-critical",
}
_SEVERE_FIRST = (
    "lower_non_recoverable",
    "upper_non_recoverable",
    "lower_critical",
    "upper_critical",
    "lower_non_critical",
    "upper_non_critical",
)


@dataclass(frozen=True)
class Seen:
    """One device's sensor read (or failure to read), to be recorded."""

    machine: Machine
    report: HealthReport


async def record(session: AsyncSession, seen: Sequence[Seen], actor: Actor, by: str) -> int:
    """Store each device's verdict; audit and announce those that changed. Returns how many
    changed. `by` says who looked ("poller", "read").

    A read that fails keeps a known verdict for `MISSES_TO_UNKNOWN - 1` reads (saying why in
    `message`): one lost answer of a loaded agent or BMC is no news, three in a row are. Rows
    are written in device order (two batches never wait on each other in opposite orders),
    and a device deleted meanwhile is left out.
    """
    if not seen:
        return 0
    now = utcnow()
    latest = {one.machine.device_id: one for one in seen}
    ids = sorted(latest)
    alive = set(await session.scalars(select(Device.id).where(Device.id.in_(ids))))
    stored = {
        row.device_id: (row.health, row.misses)
        for row in await session.execute(
            select(HealthStatus.device_id, HealthStatus.health, HealthStatus.misses)
            .where(HealthStatus.device_id.in_(ids))
            .with_for_update()  # a poll and a person's read announce a change once
        )
    }
    rows: list[dict[str, Any]] = []
    changes: list[outbox.HealthChange] = []
    for device_id in (device_id for device_id in ids if device_id in alive):
        one = latest[device_id]
        was, misses = stored.get(device_id, (None, 0))
        health, reasons, message, misses = _judged(one.report, was, misses)
        rows.append(
            {
                "device_id": device_id,
                "health": health.value,
                "reasons": reasons,
                "path": one.report.path,
                "message": message,
                "misses": misses,
                "checked_at": now,
                "changed_at": now,
            }
        )
        if _announced(was, health):
            stage(session, _changed(one, actor, was, health, reasons, message, by))
            changes.append(_payload(one, was, health, reasons, now))
    if rows:
        await _upsert(session, rows)
    await outbox.health_changed(session, changes)
    return len(changes)


MISSES_TO_UNKNOWN = 3  # failed reads in a row before a known verdict becomes `unknown`


def _judged(
    report: HealthReport, was: str | None, misses: int
) -> tuple[Health, list[str], str, int]:
    """The verdict, its reasons, why it is unknown or stale, and the failed reads in a row."""
    if report.status is TaskStatus.SUCCEEDED and report.data is not None:
        health, reasons = verdict(report.data.sensors)
        return health, reasons, "", 0
    misses += 1
    if was in _KNOWN and misses < MISSES_TO_UNKNOWN:
        said = f"the last read failed ({misses} of {MISSES_TO_UNKNOWN} before unknown): "
        return Health(was), [], said + report.message, misses
    return Health.UNKNOWN, [], report.message, misses


_KNOWN = (Health.OK.value, Health.WARNING.value, Health.CRITICAL.value)


def _announced(was: str | None, now: Health) -> bool:
    """A change of verdict; a device read for the first time counts only when it is not ok
    (the first poll of a healthy fleet is no news)."""
    if was is None:
        return now in (Health.WARNING, Health.CRITICAL)
    return was != now.value


def _changed(
    one: Seen,
    actor: Actor,
    was: str | None,
    now: Health,
    reasons: list[str],
    message: str,
    by: str,
) -> Event:
    details: dict[str, Any] = {"before": was or Health.UNKNOWN.value, "after": now.value}
    details |= {"reasons": reasons} if reasons else {}
    details |= {"message": message} if message else {}
    return Event(
        EventType.HEALTH_CHANGED,
        actor,
        target_type="device",
        target_id=one.machine.device_id,
        target_name=one.machine.name,
        site=one.machine.site,
        details=details | {"seen_by": by},
    )


def _payload(
    one: Seen, was: str | None, now: Health, reasons: list[str], at: datetime
) -> outbox.HealthChange:
    return outbox.HealthChange(
        device_id=one.machine.device_id,
        device=one.machine.name,
        site_id=one.machine.site_id,
        site=one.machine.site,
        before=was or Health.UNKNOWN.value,
        after=now.value,
        reasons=reasons,
        message=one.report.message if now is Health.UNKNOWN else "",
        at=at,
    )


async def _upsert(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert or update health_status rows; `changed_at` moves only when the verdict does."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(HealthStatus)
    new = statement.excluded
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[HealthStatus.device_id],
            set_={
                "health": new.health,
                "reasons": case(  # a stale verdict keeps the reasons it was given for
                    (new.misses == 0, new.reasons),
                    (new.health == Health.UNKNOWN.value, new.reasons),
                    else_=HealthStatus.reasons,
                ),
                "misses": new.misses,
                "path": new.path,
                "message": new.message,
                "checked_at": new.checked_at,
                "changed_at": case(
                    (HealthStatus.health != new.health, new.changed_at),
                    else_=HealthStatus.changed_at,
                ),
            },
        ),
        rows,
    )


def cleared(ctx: RequestContext, machine: Machine, report: HealthReport) -> Event:
    """The audit of an event log clear, done or not, with what the log held."""
    done = report.status is TaskStatus.SUCCEEDED and report.data is not None
    details: dict[str, Any] = {"path": report.path} if report.path else {}
    if done and report.data is not None:
        events = report.data.events
        details["entries"] = len(events)
        details["newest"] = [
            f"{event.time or '?'} {event.sensor}: {event.message}" for event in events[:20]
        ]
    else:
        details["message"] = report.message
    return ctx.event(
        EventType.HEALTH_EVENTS_CLEARED,
        outcome=Outcome.SUCCESS if done else Outcome.FAILURE,
        target_type="device",
        target_id=machine.device_id,
        target_name=machine.name,
        site=machine.site,
        details=details,
    )
