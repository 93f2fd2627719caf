"""Messages between the central and an agent: the same types in-process and over the link.

Plain frozen dataclasses, so an agent needs nothing of the central's stack; `encode` and
`decode` give the JSON form a remote link carries.
"""

from __future__ import annotations

import dataclasses
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


_KINDS: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (IpmiPath, RedfishPath, PowerOrder, BootOrder, Report)
}


def encode(message: Order | Report) -> bytes:
    """JSON with the type named, for the remote link (secrets travel inside TLS only)."""

    def tagged(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            body = {f.name: tagged(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return {"type": type(value).__name__, **body}
        if isinstance(value, tuple | list):
            return [tagged(item) for item in value]
        return value

    return orjson.dumps(tagged(message))


def decode(data: bytes) -> Order | Report:
    def build(value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") in _KINDS:
            cls = _KINDS[value["type"]]
            hints = {f.name: f for f in dataclasses.fields(cls)}
            args = {k: build(v) for k, v in value.items() if k in hints}
            if "paths" in args:
                args["paths"] = tuple(args["paths"])
            for name, enum in _ENUMS.get(cls, {}).items():
                if args.get(name) is not None:
                    args[name] = enum(args[name])
            return cls(**args)
        if isinstance(value, list):
            return [build(item) for item in value]
        return value

    message = build(orjson.loads(data))
    if not isinstance(message, PowerOrder | BootOrder | Report):
        raise ValueError("not a Rackhand agent message")
    return message


_ENUMS: dict[type[Any], dict[str, type[StrEnum]]] = {
    PowerOrder: {"action": PowerAction},
    BootOrder: {"boot": BootDevice},
    Report: {"status": TaskStatus, "power_state": PowerState},
}
