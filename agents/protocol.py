"""Messages between the central and an agent: the same types in-process and over the link.

Plain frozen dataclasses, so an agent needs nothing of the central's stack; `encode` and
`decode` give the JSON form a remote link carries. An agent's worker processes speak the same
encoding over their pipes, with messages of their own (`decode_worker`, the last section).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import orjson

# Closed sets the central and the agent share -------------------------------------------------


class PathKind(StrEnum):
    """How a device is reached: the catalogue's control path kinds, and the drivers' keys."""

    IPMI = "ipmi"
    REDFISH = "redfish"
    CONSOLE_PORT = "console_port"
    PDU_OUTLET = "pdu_outlet"
    SSH = "ssh"
    LIBVIRT = "libvirt"


class Dialect(StrEnum):
    """The CLI of an SSH device (docs/dialects.md): the catalogue accepts them all; the
    console-server driver speaks `opengear`, `avocent_acs`, `raritan_sx` and `menu`, the PDU
    driver `raritan_px` and `apc`."""

    OPENGEAR = "opengear"
    OPENGEAR_NGCS = "opengear_ngcs"
    CYCLADES = "cyclades"
    AVOCENT_ACS = "avocent_acs"
    RARITAN_SX = "raritan_sx"
    MENU = "menu"
    RARITAN_PX = "raritan_px"
    APC = "apc"
    SHELL = "shell"


class Hypervisor(StrEnum):
    """How a hypervisor host's guests are driven over its ssh path (`options.hypervisor`)."""

    LIBVIRT = "libvirt"  # `virsh` on a libvirt URI: KVM/QEMU, and Xen through libxl
    XL = "xl"  # Xen's own toolstack, without libvirt


class CloseReason(StrEnum):
    """Why a console session ended, as the agent reports it and the central stores it."""

    CLOSED = "closed"  # asked: a viewer, DELETE, the agent stopping
    DEVICE = "device"  # the device (or the box in front of it) hung up
    FAILED = "failed"  # no path could open it
    BUSY = "busy"  # the port or SOL payload is someone else's
    AGENT = "agent"  # the agent's link dropped
    TIMEOUT = "timeout"  # the agent did not attach it in time
    IDLE = "idle"
    MAX_LENGTH = "max_length"
    UNWATCHED = "unwatched"
    SHUTDOWN = "shutdown"  # the central stopped
    LOST = "lost"  # its central is gone: ended by another


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
    SKIPPED = "skipped"  # picked by a filter, but it has no power path: never sent


FINISHED = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED,
     TaskStatus.LOST, TaskStatus.SKIPPED}
)  # fmt: skip


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class Health(StrEnum):
    """One verdict on a machine's hardware, or on one sensor or logged event, worst last."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"  # nothing read yet, or nothing could be read


class SensorState(StrEnum):
    """What one sensor says: its reading against its thresholds, or its asserted states."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    NOT_PRESENT = "not_present"  # the sensor reads nothing now: absent part, scanning disabled


class HealthRead(StrEnum):
    """What a `HealthOrder` reads from a BMC."""

    SENSORS = "sensors"
    EVENTS = "events"  # the system event log, newest first
    INVENTORY = "inventory"  # FRU data
    CLEAR_EVENTS = "clear_events"  # the log as it was, then cleared: nothing unseen is lost


@dataclass(frozen=True)
class IpmiPath:
    """An IPMI-over-LAN BMC; `cipher_suite` 17 (SHA-256) or 3 (SHA-1), 0 = let the client pick.

    `privilege` is the session's level: `administrator` (operator where the BMC grants no
    more), `operator` or `user` (status reads only).
    """

    address: str
    username: str
    password: str = field(repr=False)
    port: int = 623
    cipher_suite: int = 0
    privilege: str = "administrator"
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


@dataclass(frozen=True)
class SshTarget:
    """A console server, KVM switch or PDU driven over SSH (its own CLI, in `dialect`).

    `host_key` is the pinned SHA-256 fingerprint in OpenSSH form ("SHA256:…"); None means not
    pinned yet: the driver accepts the key it is shown and reports it (`HostKeySeen`) so the
    central pins it (trust on first use, docs/consoles.md).
    """

    address: str
    username: str
    password: str = field(repr=False)
    dialect: Dialect
    port: int = 22
    host_key: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class ConsolePortPath:
    """Port `port` (numbered from 1, as on the box's label) of a console server / KVM switch."""

    server: SshTarget
    port: int
    kind: str = "console_port"

    @property
    def endpoint(self) -> str:
        return f"{self.server.endpoint}/port{self.port}"


@dataclass(frozen=True)
class PduOutletPath:
    """Outlets of a switched PDU that feed one device (several for dual power supplies)."""

    pdu: SshTarget
    outlets: tuple[int, ...]
    kind: str = "pdu_outlet"

    @property
    def endpoint(self) -> str:
        return self.pdu.endpoint  # one CLI session per PDU at a time


@dataclass(frozen=True)
class HostPath:
    """A hypervisor host reached over SSH (a shell): its `virsh -c uri` or `xl` drives the
    guests. `ssh.password` is a password or an OpenSSH private key (PEM text)."""

    ssh: SshTarget
    hypervisor: Hypervisor
    uri: str = "qemu:///system"  # libvirt only
    kind: str = "ssh"

    @property
    def endpoint(self) -> str:
        return self.ssh.endpoint


@dataclass(frozen=True)
class GuestPath:
    """A guest (a libvirt or Xen domain, by UUID) on a hypervisor host. `name` is the domain's
    name at the last sync: `xl` starts a stopped guest from its `/etc/xen/<name>.cfg`."""

    host: HostPath
    domain: str
    name: str
    kind: str = "libvirt"

    @property
    def endpoint(self) -> str:
        return f"{self.host.endpoint}/{self.domain}"


Path = IpmiPath | RedfishPath | PduOutletPath | GuestPath
ConsolePath = IpmiPath | ConsolePortPath | GuestPath  # SOL, a console server's port, a guest's


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


@dataclass(frozen=True)
class GuestsOrder:
    """List the guests of a hypervisor host (`device`): answered by one `GuestsReport`."""

    task_id: str
    device: str
    site: str
    host: HostPath
    timeout: float = 60.0


@dataclass(frozen=True)
class HealthOrder:
    """Read (or clear) one device's health data over its first BMC path that answers:
    answered by one `HealthReport`."""

    task_id: str
    device: str
    site: str
    read: HealthRead
    paths: tuple[Path, ...]
    timeout: float = 60.0
    background: bool = False  # a poll: it queues behind what people asked for


TaskOrder = PowerOrder | BootOrder  # the orders of a job's tasks
Question = GuestsOrder | HealthOrder  # asked of an agent, answered once, outside any job
Order = TaskOrder | Question


@dataclass(frozen=True)
class Report:
    """What happened to one task; `running` reports may precede the final one."""

    task_id: str
    status: TaskStatus
    power_state: PowerState | None = None
    path: str | None = None  # the path kind that acted, e.g. "ipmi"
    message: str = ""
    attempts: int = 0


@dataclass(frozen=True)
class Guest:
    """One domain as its host describes it. `state` is the hypervisor's own word ("running",
    "shut off", "paused", "crashed"…); `power` what it means for power."""

    uuid: str
    name: str
    state: str
    power: PowerState
    vcpus: int = 0
    memory_mib: int = 0
    autostart: bool = False


@dataclass(frozen=True)
class GuestsReport:
    """The end of a `GuestsOrder`: the host's guests (`succeeded`), or why not."""

    task_id: str
    status: TaskStatus
    guests: tuple[Guest, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class Thresholds:
    """A sensor's thresholds in its unit; None where the BMC defines none."""

    lower_non_recoverable: float | None = None
    lower_critical: float | None = None
    lower_non_critical: float | None = None
    upper_non_critical: float | None = None
    upper_critical: float | None = None
    upper_non_recoverable: float | None = None


@dataclass(frozen=True)
class Sensor:
    """One sensor as its BMC reports it. `type` is the IPMI sensor type's name ("Temperature",
    "Fan", "Power Supply"…), `states` what is asserted, in words."""

    name: str
    type: str
    state: SensorState
    reading: float | None = None
    unit: str = ""  # "°C", "RPM", "V", "W"…
    states: tuple[str, ...] = ()
    thresholds: Thresholds | None = None


@dataclass(frozen=True)
class LogEvent:
    """One entry of a BMC's event log, decoded. `time` is ISO 8601 UTC, None when the BMC had
    no clock set yet; `sensor` and `sensor_type` name what raised it."""

    id: str
    time: str | None
    severity: Health
    message: str
    sensor: str = ""
    sensor_type: str = ""
    asserted: bool = True  # False: the condition went away (a deassertion)
    raw: str = ""  # the entry's bytes in hex (IPMI), for what no decoder reads


@dataclass(frozen=True)
class FruArea:
    """One area of a FRU record (board, product or chassis); empty strings where unset."""

    manufacturer: str = ""
    name: str = ""  # product or board name; a chassis' type
    part_number: str = ""
    serial_number: str = ""
    version: str = ""
    asset_tag: str = ""
    manufactured: str = ""  # ISO 8601 UTC (boards only)


@dataclass(frozen=True)
class Fru:
    """One field-replaceable unit's inventory: FRU 0 is the system itself."""

    id: int
    name: str
    board: FruArea | None = None
    product: FruArea | None = None
    chassis: FruArea | None = None


@dataclass(frozen=True)
class HealthData:
    """What a health read found: the part the read asked for is filled, the rest is empty."""

    sensors: tuple[Sensor, ...] = ()
    events: tuple[LogEvent, ...] = ()
    inventory: tuple[Fru, ...] = ()


@dataclass(frozen=True)
class HealthReport:
    """The end of a `HealthOrder`: what was read (`succeeded`) over `path`, or why not."""

    task_id: str
    status: TaskStatus
    data: HealthData | None = None
    path: str | None = None  # the path kind that answered
    message: str = ""


# Consoles ------------------------------------------------------------------------------------


class ConsoleOp(StrEnum):
    BREAK = "break"
    RESIZE = "resize"
    CLOSE = "close"


@dataclass(frozen=True)
class ConsoleOpen:
    """Open the device's console, trying its paths in order; the agent holds the session."""

    session_id: str
    device: str
    site: str
    paths: tuple[ConsolePath, ...]
    cols: int = 80
    rows: int = 25


@dataclass(frozen=True)
class ConsoleInput:
    """Bytes typed by the viewer holding the write lock, as they are."""

    session_id: str
    data: bytes


@dataclass(frozen=True)
class ConsoleControl:
    session_id: str
    op: ConsoleOp
    cols: int = 0
    rows: int = 0


@dataclass(frozen=True)
class ConsoleOpened:
    """The device session is up on `path` (a path kind) at `endpoint`."""

    session_id: str
    path: str
    endpoint: str
    message: str = ""


@dataclass(frozen=True)
class ConsoleOutput:
    session_id: str
    data: bytes


@dataclass(frozen=True)
class ConsoleClosed:
    """The device session ended (or never opened); `message` says why, for people."""

    session_id: str
    reason: CloseReason
    message: str = ""


@dataclass(frozen=True)
class HostKeySeen:
    """An SSH device showed this key while none was pinned: the central pins it."""

    address: str
    port: int
    fingerprint: str


# The link ------------------------------------------------------------------------------------

PROTOCOL = 2
"""The protocol's version, named in `Hello` and `Welcome` (2: `HealthOrder` and `HealthReport`).
A change that an older peer would misread is a new version; `Hello` and `Refusal` keep their
shape in every version, so a mismatch is always a clear refusal (docs/agents.md, "Versions")."""


class RefusedBecause(StrEnum):
    VERSION = "version"  # the central does not speak the agent's protocol version
    CREDENTIAL = "credential"  # unknown credential
    REVOKED = "revoked"  # the agent's enrolment was revoked
    SITE = "site"  # the hello names another site than the agent was enrolled for
    HELLO = "hello"  # the first message was not a well-formed Hello
    REPLACED = "replaced"  # the same agent connected again; this older link is closed
    SILENT = "silent"  # no message within the heartbeat's bound (or no hello in time)
    PROTOCOL = "protocol"  # too many messages that are not for the central, or about work
    # the agent was not given
    STOPPING = "stopping"  # the central is shutting down


# Refusals that another try cannot mend: the agent stops and says why.
FINAL_REFUSALS = frozenset(
    {RefusedBecause.VERSION, RefusedBecause.CREDENTIAL, RefusedBecause.REVOKED,
     RefusedBecause.SITE, RefusedBecause.HELLO}
)  # fmt: skip


@dataclass(frozen=True)
class Hello:
    """An agent's first message on a link: who it is and which path kinds its drivers handle."""

    protocol: int
    version: str  # the agent's software version
    site: str
    name: str
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Welcome:
    """The central took the hello: heartbeat every `heartbeat` s; each console may send
    `window` bytes of output before the central's first `Credit`."""

    protocol: int
    agent_id: int
    heartbeat: float
    window: int


@dataclass(frozen=True)
class Refusal:
    """The central will not (or no longer) talk on this link; it closes after this."""

    reason: RefusedBecause
    message: str


@dataclass(frozen=True)
class Heartbeat:
    """Sent both ways every `Welcome.heartbeat` s; a link silent for three is dead."""

    tasks: int = 0  # tasks the agent holds
    consoles: int = 0  # console sessions the agent holds


@dataclass(frozen=True)
class Cancel:
    """Stop a task: it ends with a `cancelled` report if it had not finished."""

    task_id: str


@dataclass(frozen=True)
class Credit:
    """The central consumed `size` bytes of a console's output: the agent may send that much
    more. A fast console waits for credit instead of filling the link ahead of a report."""

    session_id: str
    size: int


ToAgent = Order | Cancel | ConsoleOpen | ConsoleInput | ConsoleControl | Credit
Answer = GuestsReport | HealthReport
FromAgent = Report | Answer | ConsoleOpened | ConsoleOutput | ConsoleClosed | HostKeySeen
LinkMessage = Hello | Welcome | Refusal | Heartbeat
Message = ToAgent | FromAgent | LinkMessage

_MESSAGES: dict[str, type[Message]] = {
    cls.__name__: cls
    for cls in (
        PowerOrder, BootOrder, GuestsOrder, HealthOrder, Report, GuestsReport, HealthReport,
        ConsoleOpen, ConsoleInput,
        ConsoleControl, ConsoleOpened, ConsoleOutput, ConsoleClosed, HostKeySeen,
        Hello, Welcome, Refusal, Heartbeat, Cancel, Credit,
    )
}  # fmt: skip
_PATHS: dict[str, type[Path | ConsolePath]] = {
    "ipmi": IpmiPath,
    "redfish": RedfishPath,
    "console_port": ConsolePortPath,
    "pdu_outlet": PduOutletPath,
    "libvirt": GuestPath,
}


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode(message: Message | WorkerMessage) -> bytes:
    """Compact JSON with the type named, on one line; for the remote link (secrets travel inside
    TLS only) and the worker pipes."""
    return orjson.dumps({"type": type(message).__name__, "body": message}, default=_default)


def _ssh(target: dict[str, Any]) -> SshTarget:
    return SshTarget(**target | {"dialect": Dialect(target["dialect"])})


def _host(fields: dict[str, Any]) -> HostPath:
    fields.pop("kind", None)
    return HostPath(
        **fields | {"ssh": _ssh(fields["ssh"]), "hypervisor": Hypervisor(fields["hypervisor"])}
    )


def _path(fields: dict[str, Any]) -> Path | ConsolePath:
    cls = _PATHS[fields.pop("kind")]
    for name in ("server", "pdu"):
        if name in fields:
            fields[name] = _ssh(fields[name])
    if "host" in fields:
        fields["host"] = _host(fields["host"])
    if "outlets" in fields:
        fields["outlets"] = tuple(fields["outlets"])
    return cls(**fields)


def decode(data: bytes) -> Message:
    """The link message `encode` made; a ValueError for anything else."""
    return _decode(data, _MESSAGES)


_M = TypeVar("_M")


def _decode(data: bytes, messages: dict[str, type[_M]]) -> _M:
    """The message of one of `messages` that `encode` made; a ValueError for anything else."""
    try:
        envelope = orjson.loads(data)
        body = envelope["body"]
        if not isinstance(body, dict):
            raise TypeError("the body is not an object")
        cls = messages[envelope["type"]]
        if "paths" in body:
            body["paths"] = tuple(_path(path) for path in body["paths"])
        if isinstance(body.get("path"), dict):  # a device path; a path kind is a string
            body["path"] = _path(body["path"])
        if cls is GuestsOrder:
            body["host"] = _host(body["host"])
        if cls is GuestsReport:
            body["guests"] = tuple(
                Guest(**guest | {"power": PowerState(guest["power"])}) for guest in body["guests"]
            )
        if cls is HealthReport or cls is DeviceAnswer:
            name = "data" if cls is HealthReport else "health"
            if body.get(name) is not None:
                body[name] = health_data(body[name])
        elif "data" in body:
            body["data"] = base64.b64decode(body["data"], validate=True)
        if "capabilities" in body:
            body["capabilities"] = tuple(body["capabilities"])
        for name, enum in _ENUMS.get(cls, {}).items():
            if body.get(name) is not None:
                body[name] = enum(body[name])
        return cls(**body)
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"not a Rackhand agent message: {exc}") from exc


_ENUMS: dict[type[Any], dict[str, type[StrEnum]]] = {
    PowerOrder: {"action": PowerAction},
    BootOrder: {"boot": BootDevice},
    Report: {"status": TaskStatus, "power_state": PowerState},
    GuestsReport: {"status": TaskStatus},
    HealthOrder: {"read": HealthRead},
    HealthReport: {"status": TaskStatus},
    ConsoleControl: {"op": ConsoleOp},
    ConsoleClosed: {"reason": CloseReason},
    Refusal: {"reason": RefusedBecause},
}


def health_data(body: dict[str, Any]) -> HealthData:
    """The `HealthData` of its JSON form (a ValueError, KeyError or TypeError if not one)."""

    def area(fields: dict[str, Any] | None) -> FruArea | None:
        return None if fields is None else FruArea(**fields)

    def sensor(fields: dict[str, Any]) -> Sensor:
        limits = fields.get("thresholds")
        return Sensor(
            **fields
            | {
                "state": SensorState(fields["state"]),
                "states": tuple(fields.get("states", ())),
                "thresholds": None if limits is None else Thresholds(**limits),
            }
        )

    return HealthData(
        sensors=tuple(sensor(fields) for fields in body.get("sensors", ())),
        events=tuple(
            LogEvent(**fields | {"severity": Health(fields["severity"])})
            for fields in body.get("events", ())
        ),
        inventory=tuple(
            Fru(**fru | {name: area(fru.get(name)) for name in ("board", "product", "chassis")})
            for fru in body.get("inventory", ())
        ),
    )


def hello_protocol(data: bytes) -> int | None:
    """The protocol version a first frame claims, read without decoding the rest: a hello of
    another version may carry fields this one does not know, and still deserves a clear answer."""
    try:
        envelope = orjson.loads(data)
        version = envelope["body"]["protocol"]
    except (KeyError, TypeError, ValueError):
        return None
    return version if isinstance(version, int) and envelope.get("type") == "Hello" else None


# Worker processes ----------------------------------------------------------------------------
# What an agent and its `python -m agents.worker` children (agents/workers.py) say over their
# pipes, in the same encoding as the link. A child's console is the `session_id` of the console
# messages above: the call id of its `console_open`, as a string.


class WorkerOp(StrEnum):
    PING = "ping"  # is the driver loaded? answered with no state
    POWER = "power"
    BOOT = "boot"
    CONSOLE_OPEN = "console_open"
    HEALTH = "health"
    CANCEL = "cancel"  # of the call `call_id`; it gets no answer


@dataclass(frozen=True)
class DeviceCall:
    """One driver call for a child, answered by exactly one `DeviceAnswer` unless cancelled."""

    call_id: int
    op: WorkerOp
    path: Path | ConsolePath | None = None
    action: PowerAction | None = None
    boot: BootDevice | None = None
    persistent: bool = False
    read: HealthRead | None = None
    cols: int = 80
    rows: int = 25


@dataclass(frozen=True)
class DeviceAnswer:
    """A call's result: the power state or health data (None if the call returns none), or a
    `DriverError` named by its class, which the agent raises again (an unknown name as
    `Refused`)."""

    call_id: int
    state: PowerState | None = None
    health: HealthData | None = None
    error: str | None = None
    message: str = ""


ToWorker = DeviceCall | ConsoleInput | ConsoleControl
FromWorker = DeviceAnswer | ConsoleOutput | ConsoleClosed
WorkerMessage = ToWorker | FromWorker


def decode_worker(data: bytes) -> WorkerMessage:
    """The worker-pipe message `encode` made; a ValueError for anything else (a link's order)."""
    return _decode(data, _WORKER_MESSAGES)


# Apart from the link's `_MESSAGES`: `decode` on the link never yields a worker's call.
_WORKER_MESSAGES: dict[str, type[WorkerMessage]] = {
    cls.__name__: cls
    for cls in (
        DeviceCall, ConsoleInput, ConsoleControl, DeviceAnswer, ConsoleOutput, ConsoleClosed,
    )
}  # fmt: skip
_ENUMS.update(
    {
        DeviceCall: {"op": WorkerOp, "action": PowerAction, "boot": BootDevice, "read": HealthRead},
        DeviceAnswer: {"state": PowerState},
    }
)
