"""What Rackhand last learnt of a device's power and of each of its control paths.

The poller and every job store a device's last power read (`power_status`, answered by the API
as the device's `power`): the state, whether the device answered, the path kind that answered
and, when none did, the message of the attempt, in which each path tried has its own part
("ipmi 10.0.0.5:623: …"). A part names its path by kind and endpoint, exactly; a kind held by
one path only needs no endpoint. Where the read cannot tell which path it was about (two paths
of a kind answering as one), the path is "not checked yet": the page says less rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from app.consoles.models import ConsoleVia
from app.fleetlink.paths import bmc_endpoint
from app.inventory.models import PathKind
from app.inventory.schemas import PathRead, PowerRead


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


def path_health(path: PathRead, reading: PowerRead | None, paths: list[PathRead]) -> PathHealth:
    """One path's last outcome as far as the last power read tells it; `paths` are all the
    device's paths (a kind held by two is told apart by endpoint only)."""
    if reading is None or path.kind not in POWER_KINDS:
        return UNCHECKED
    alone = sum(1 for other in paths if other.kind == path.kind) == 1
    # The read names the kind that answered, not which of its paths: only a lone one is known.
    if reading.reachable and reading.path == path.kind and alone:
        return PathHealth(Health.OK, "answered the last power read", reading.last_seen_at)
    for part in reading.message.split("; "):
        if _names(part, path, alone):
            return PathHealth(Health.FAILED, part, reading.checked_at)
    return UNCHECKED


@dataclass(frozen=True)
class ConsoleAttempt:
    """A console session's outcome, as the consoles service stores it."""

    asked: ConsoleVia
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
        if attempt.failed and attempt.asked.value == path.kind.value:
            return PathHealth(Health.FAILED, attempt.message or "the console failed", attempt.at)
    return UNCHECKED


def health(
    path: PathRead, paths: list[PathRead], reading: PowerRead | None, attempts: list[ConsoleAttempt]
) -> PathHealth:
    """What the power read says of the path, else what its last console session says."""
    found = path_health(path, reading, paths)
    return found if found.health is not Health.UNCHECKED else console_health(path, attempts)


def _names(part: str, path: PathRead, alone: bool) -> bool:
    """Whether a part of an attempt's message is about this path: "<kind> <endpoint>: …" or
    "<kind> <endpoint> not used: …" with its own endpoint exactly (10.0.0.1:623 is not
    10.0.0.10:623), or any part of its kind when the device has no other path of that kind
    (an outlet's endpoint is its PDU's, which the path does not carry)."""
    endpoint = bmc_endpoint(path.kind, path.address, path.port)
    if endpoint is not None:
        for after in (": ", " not used: "):
            if part.startswith(f"{path.kind} {endpoint}{after}"):
                return True
    return alone and (part.startswith(f"{path.kind} ") or part.startswith(f"{path.kind}: "))
