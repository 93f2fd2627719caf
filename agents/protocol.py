"""Messages between the central and an agent: the same types in-process and over the link.

Plain frozen dataclasses, so an agent needs nothing of the central's stack; `encode` and
`decode` give the JSON form a remote link carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson


class PowerAction(StrEnum):
    STATUS = "status"
    ON = "on"
    OFF = "off"
    SOFT = "soft"
    CYCLE = "cycle"
    RESET = "reset"
    NMI = "nmi"


# Safe to repeat: asking again cannot do harm (on when on, off when off). Cycle, reset, soft
# and nmi are not: a retransmitted cycle cycles twice.
IDEMPOTENT = frozenset({PowerAction.STATUS, PowerAction.ON, PowerAction.OFF})


class BootDevice(StrEnum):
    BIOS = "bios"
    PXE = "pxe"
    DISK = "disk"
    CDROM = "cdrom"
    USB = "usb"
    DEFAULT = "default"


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LOST = "lost"


FINISHED = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED,
     TaskStatus.LOST}
)  # fmt: skip


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class IpmiPath:
    """An IPMI-over-LAN BMC; `cipher_suite` 17 (SHA-256) or 3 (SHA-1), 0 = let the client pick."""

    address: str
    username: str
    password: str = field(repr=False)
    port: int = 623
    cipher_suite: int = 0
    kind: str = "ipmi"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class RedfishPath:
    url: str
    username: str
    password: str = field(repr=False)
    fingerprint: str | None = None  # SHA-256 of the BMC's certificate, pinned
    kind: str = "redfish"

    @property
    def endpoint(self) -> str:
        return self.url


Path = IpmiPath | RedfishPath


@dataclass(frozen=True)
class PowerOrder:
    """Do one power action on one device, trying its paths in order."""

    task_id: str
    device: str
    site: str
    action: PowerAction
    paths: tuple[Path, ...]
    timeout: float = 30.0
    background: bool = False  # a poll: it queues behind what people asked for


@dataclass(frozen=True)
class BootOrder:
    """Set the next (or every) boot device of one device."""

    task_id: str
    device: str
    site: str
    boot: BootDevice
    persistent: bool
    paths: tuple[Path, ...]
    timeout: float = 30.0


Order = PowerOrder | BootOrder


@dataclass(frozen=True)
class Report:
    """What happened to one task; `running` reports may precede the final one."""

    task_id: str
    status: TaskStatus
    power_state: PowerState | None = None
    path: str | None = None  # the path kind that acted, e.g. "ipmi"
    message: str = ""
    attempts: int = 0


_MESSAGES: dict[str, type[Order | Report]] = {
    cls.__name__: cls for cls in (PowerOrder, BootOrder, Report)
}
_PATHS: dict[str, type[Path]] = {"ipmi": IpmiPath, "redfish": RedfishPath}


def encode(message: Order | Report) -> bytes:
    """JSON with the type named, for the remote link (secrets travel inside TLS only)."""
    return orjson.dumps({"type": type(message).__name__, "body": message})


def decode(data: bytes) -> Order | Report:
    """The message `encode` made; a ValueError for anything else."""
    try:
        envelope = orjson.loads(data)
        body = envelope["body"]
        cls = _MESSAGES[envelope["type"]]
        if "paths" in body:
            body["paths"] = tuple(_PATHS[path["kind"]](**path) for path in body["paths"])
        for name, enum in _ENUMS[cls].items():
            if body.get(name) is not None:
                body[name] = enum(body[name])
        return cls(**body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a Rackhand agent message: {exc}") from exc


_ENUMS: dict[type[Any], dict[str, type[StrEnum]]] = {
    PowerOrder: {"action": PowerAction},
    BootOrder: {"boot": BootDevice},
    Report: {"status": TaskStatus, "power_state": PowerState},
}
