"""What Rackhand last learnt of a device's power and of each of its control paths.

The poller and every job store a device's last power read (`power_status`): the state, whether
the device answered, the path kind that answered and, when none did, the message of the
attempt, in which each path tried has its own part ("ipmi 10.0.0.5:623: …"). A path nobody has
tried yet is "not checked yet": the page says so rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from app.inventory.devices import PowerReading, power_readings
from app.inventory.models import Device, PathKind
from app.inventory.schemas import PathRead


class Health(StrEnum):
    OK = "ok"
    FAILED = "failed"
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class PathHealth:
    health: Health
    detail: str
    at: datetime | None = None


UNCHECKED = PathHealth(Health.UNCHECKED, "not checked yet")
# The kinds a power read goes through; console and ssh paths are not read by it.
POWER_KINDS = frozenset({PathKind.IPMI, PathKind.REDFISH, PathKind.PDU_OUTLET})


async def power_reading(session: AsyncSession, device: Device) -> PowerReading | None:
    """The device's last power read (by the poller or a job), or None if never read. The
    caller has already found `device` through the ctx's checks (`device_for`)."""
    return (await power_readings(session, [device.id])).get(device.id)


def path_health(path: PathRead, reading: PowerReading | None) -> PathHealth:
    """One path's last outcome as far as the last power read tells it."""
    if reading is None or path.kind not in POWER_KINDS:
        return UNCHECKED
    if reading.reachable and reading.path == path.kind:
        return PathHealth(Health.OK, "answered the last power read", reading.last_seen_at)
    for part in reading.message.split("; "):
        if _names(part, path):
            return PathHealth(Health.FAILED, part, reading.checked_at)
    return UNCHECKED


@dataclass(frozen=True)
class ConsoleAttempt:
    """A console session's outcome, as the consoles service stores it."""

    asked: str  # auto, ipmi, console_port
    attached: str | None  # the path kind that attached
    failed: bool
    message: str
    at: datetime


CONSOLE_KINDS = frozenset({PathKind.IPMI, PathKind.CONSOLE_PORT})


def console_health(path: PathRead, attempts: list[ConsoleAttempt]) -> PathHealth:
    """A console path's last outcome: the newest session that attached through its kind, or
    that failed when asked for that kind alone (an `auto` failure names no single path)."""
    if path.kind not in CONSOLE_KINDS:
        return UNCHECKED
    for attempt in attempts:  # newest first
        if attempt.attached == path.kind:
            return PathHealth(Health.OK, "a console attached", attempt.at)
        if attempt.failed and attempt.asked == path.kind:
            return PathHealth(Health.FAILED, attempt.message or "the console failed", attempt.at)
    return UNCHECKED


def health(
    path: PathRead, reading: PowerReading | None, attempts: list[ConsoleAttempt]
) -> PathHealth:
    """What the power read says of the path, else what its last console session says."""
    found = path_health(path, reading)
    return found if found.health is not Health.UNCHECKED else console_health(path, attempts)


def _names(part: str, path: PathRead) -> bool:
    """Whether a part of an attempt's message is about this path (its kind, then its
    endpoint when the message gives one)."""
    if not part.startswith(f"{path.kind} "):
        return False
    if path.address is None:
        return True
    return path.address in part
