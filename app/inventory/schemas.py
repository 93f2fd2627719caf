"""Request and response shapes of the catalogue API."""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from agents.protocol import Dialect, Health, Hypervisor, PowerState
from app.inventory.models import DeviceKind, DeviceStatus, PathKind, SiteKind

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SLUG = r"^[a-z0-9][a-z0-9-]*$"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_URL = re.compile(r"^https://(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:\[\]]+)(:(?P<port>\d{1,5}))?(/.*)?$")


def _not_all_digits(value: str) -> str:
    if value.isdigit():
        raise ValueError("must not be only digits (that reads as an id); add a letter")
    return value


def _host(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ValueError("must be an IP address or a DNS host name")
    return value.lower()


def _redfish_address(value: str) -> str:
    match = _URL.match(value)
    if match is None:
        return _host(value)
    if "?" in value or "#" in value:  # never used, and shown in answers, the audit and logs
        raise ValueError(
            "must not carry a ?query or #fragment; the BMC's credentials go in username and secret"
        )
    _host(match["host"].strip("[]"))
    return value


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=_NAME),
    AfterValidator(_not_all_digits),
]
RackName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=_NAME),
    AfterValidator(_not_all_digits),
]
Slug = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=_SLUG),
    AfterValidator(_not_all_digits),
]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Tag = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/=-]*$")
]
Host = Annotated[str, StringConstraints(min_length=1, max_length=253), AfterValidator(_host)]
RedfishAddress = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_redfish_address)
]
TcpPort = Annotated[int, Field(ge=1, le=65535)]
Units = Annotated[int, Field(ge=1, le=100)]
Text = Annotated[str, StringConstraints(max_length=2000)]
Short = Annotated[str, StringConstraints(max_length=100)]
Username = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Secret = Annotated[SecretStr, Field(min_length=1, max_length=16384)]


def reject_nul(data: Any) -> None:
    """PostgreSQL text and JSONB cannot hold NUL; refuse it up front, wherever it hides."""
    if isinstance(data, str):
        if "\x00" in data:
            raise ValueError("text may not contain NUL (\\x00) characters")
    elif isinstance(data, dict):
        for key, value in data.items():
            reject_nul(key)
            reject_nul(value)
    elif isinstance(data, list | tuple):
        for item in data:
            reject_nul(item)


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if "\\x00" in repr(data):  # repr is C-fast and shows NUL as \x00; walk only then
            reject_nul(data)
        return data


class ReadSchema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Sites ---------------------------------------------------------------------------------------

_TIMEZONES: frozenset[str] | None = None


def _timezone(value: str) -> str:
    global _TIMEZONES
    if _TIMEZONES is None:
        _TIMEZONES = frozenset(available_timezones()) | {"UTC"}
    if value not in _TIMEZONES:
        raise ValueError("must be an IANA time zone such as 'Europe/Paris' or 'UTC'")
    return value


TimeZone = Annotated[str, AfterValidator(_timezone)]
PollSeconds = Annotated[
    int,
    Field(ge=0, le=86_400, description="seconds between power-state polls; 0 turns polling off"),
]
HealthSeconds = Annotated[
    int,
    Field(
        ge=0, le=86_400, description="seconds between sensor reads of each device; 0 turns it off"
    ),
]


class SiteCreate(Schema):
    slug: Slug
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    kind: SiteKind = SiteKind.DATACENTER
    timezone: TimeZone = "UTC"
    address: Text = ""
    description: Text = ""
    require_ticket: bool = Field(
        False, description="refuse destructive actions at this site without a ticket"
    )
    poll_seconds: PollSeconds = 300
    health_seconds: HealthSeconds = 600


class SiteUpdate(Schema):
    slug: Slug | None = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    kind: SiteKind | None = None
    timezone: TimeZone | None = None
    address: Text | None = None
    description: Text | None = None
    require_ticket: bool | None = None
    poll_seconds: PollSeconds | None = None
    health_seconds: HealthSeconds | None = None


class SiteRead(ReadSchema):
    id: int
    slug: str
    name: str
    kind: SiteKind
    timezone: str
    address: str
    description: str
    require_ticket: bool
    poll_seconds: int
    health_seconds: int
    created_at: datetime
    updated_at: datetime


# Racks ---------------------------------------------------------------------------------------


class RackCreate(Schema):
    site: Ref
    name: RackName
    height_u: Units = 42
    description: Text = ""


class RackUpdate(Schema):
    name: RackName | None = None
    height_u: Units | None = None
    description: Text | None = None


class RackRead(BaseModel):
    id: int
    site: str
    name: str
    height_u: int
    description: str
    created_at: datetime
    updated_at: datetime


# Devices -------------------------------------------------------------------------------------


def _portable_json(value: Any) -> Any:
    """Numbers every JSON reader agrees on: 64-bit integers, finite floats."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError("integers must fit in 64 bits; store larger numbers as strings")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
    elif isinstance(value, dict):
        for item in value.values():
            _portable_json(item)
    elif isinstance(value, list):
        for item in value:
            _portable_json(item)
    return value


Attributes = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], Any],
    AfterValidator(_portable_json),
]


def _distinct_sorted(tags: list[str]) -> list[str]:
    return sorted(set(tags))


Tags = Annotated[list[Tag], Field(max_length=64), AfterValidator(_distinct_sorted)]


class DeviceFields(Schema):
    """Fields shared by create and import; an update makes every one optional."""

    kind: DeviceKind
    site: Ref
    rack: Ref | None = None
    position_u: Annotated[int, Field(ge=1, le=100)] | None = None
    height_u: Units = 1
    parent: Ref | None = None
    status: DeviceStatus = DeviceStatus.ACTIVE
    vendor: Short = ""
    model: Short = ""
    serial: Short = ""
    asset_tag: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    arch: Annotated[str, StringConstraints(max_length=32)] = ""
    os: Annotated[str, StringConstraints(max_length=32)] = ""
    os_version: Annotated[str, StringConstraints(max_length=64)] = ""
    description: Text = ""
    tags: Tags = []
    attributes: Attributes = {}


class DeviceCreate(DeviceFields):
    name: Name


class DeviceUpdate(Schema):
    name: Name | None = None
    kind: DeviceKind | None = None
    site: Ref | None = None
    rack: Ref | None = None
    position_u: Annotated[int, Field(ge=1, le=100)] | None = None
    height_u: Units | None = None
    parent: Ref | None = None
    status: DeviceStatus | None = None
    vendor: Short | None = None
    model: Short | None = None
    serial: Short | None = None
    asset_tag: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    arch: Annotated[str, StringConstraints(max_length=32)] | None = None
    os: Annotated[str, StringConstraints(max_length=32)] | None = None
    os_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    description: Text | None = None
    tags: Tags | None = None
    attributes: Attributes | None = None


class PowerRead(BaseModel):
    """A device's last power read: what the poller or a job last learnt, and from which path.
    Its message is the agent's (endpoints and errors, never a secret)."""

    state: PowerState = Field(description="as `power_state`")
    reachable: bool = Field(description="false: no path answered the last read")
    checked_at: datetime
    path: str | None = Field(description="the path kind that answered")
    message: str = Field(description="why no path answered, one part per path tried")
    last_seen_at: datetime | None = Field(description="the device's last answer")


class DeviceRead(BaseModel):
    id: int
    name: str
    kind: DeviceKind
    site: str
    rack: str | None
    position_u: int | None
    height_u: int
    parent: str | None
    status: DeviceStatus
    vendor: str
    model: str
    serial: str
    asset_tag: str | None
    arch: str
    os: str
    os_version: str
    description: str
    tags: list[str]
    attributes: dict[str, Any]
    power_state: PowerState = PowerState.UNKNOWN
    power: PowerRead | None = Field(
        None, description="the last power read (by the poller or a job); null: never read"
    )
    health: Health = Field(
        Health.UNKNOWN, description="the last verdict on its sensors; never read: unknown"
    )
    created_at: datetime
    updated_at: datetime


# Control paths -------------------------------------------------------------------------------

Priority = Annotated[int, Field(ge=0, le=1000)]
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class SecretChange(StrEnum):
    """What a path update did to its stored secret (docs/catalogue.md, control paths)."""

    KEPT = "kept"
    REPLACED = "replaced"  # a new secret came with the update
    CLEARED = "cleared"  # `"secret": null`
    DROPPED = "dropped"  # re-pointed without a new secret: never sent to the new destination
    UNSET = "unset"  # there was none and none came


class PathOptions(Schema):
    """A path's options. An unknown one is refused naming those this kind takes; whether a
    driver can use the values is `agents.drivers.options.validate_path`'s to say."""

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        unknown = sorted(set(data) - set(cls.model_fields)) if isinstance(data, dict) else []
        if unknown:
            takes = ", ".join(cls.model_fields) or "none"
            raise ValueError(f"unknown option {unknown[0]!r}; this kind of path takes {takes}")
        return data


class IpmiOptions(PathOptions):
    cipher_suite: Literal[3, 17] | None = None
    privilege: Literal["administrator", "operator", "user"] = "administrator"


class RedfishOptions(PathOptions):
    tls_fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F:]{64,95}$")] | None = (
        None
    )


class SshOptions(PathOptions):
    dialect: Dialect = Dialect.SHELL
    # The device's pinned host key, as `ssh-keygen -lf` prints it; set on first contact
    # (trust on first use) and changed only by an admin (audited as a path update).
    host_key: Annotated[str, StringConstraints(pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")] | None = None
    # A hypervisor host's: how its guests are driven, and how often they are synced (minutes;
    # none: only when asked). docs/hypervisors.md
    hypervisor: Hypervisor | None = None
    uri: Annotated[str, StringConstraints(max_length=255)] | None = None
    sync_minutes: Annotated[int, Field(ge=1, le=10080)] | None = None


class LibvirtOptions(PathOptions):
    # The domain's name at the last sync (xl starts a stopped guest from /etc/xen/<name>.cfg).
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None


class NoOptions(PathOptions):
    pass


class IpmiPath(Schema):
    kind: Literal[PathKind.IPMI]
    priority: Priority = 10
    address: Host
    port: TcpPort = 623
    username: Username
    secret: Secret | None = None
    options: IpmiOptions = IpmiOptions()


class RedfishPath(Schema):
    kind: Literal[PathKind.REDFISH]
    priority: Priority = 20
    address: RedfishAddress
    port: TcpPort = 443
    username: Username
    secret: Secret | None = None
    options: RedfishOptions = RedfishOptions()


class ConsolePortPath(Schema):
    kind: Literal[PathKind.CONSOLE_PORT]
    priority: Priority = 30
    via: Ref
    port: Annotated[int, Field(ge=1, le=4096)]
    options: NoOptions = NoOptions()


class PduOutletPath(Schema):
    kind: Literal[PathKind.PDU_OUTLET]
    priority: Priority = 40
    via: Ref
    outlets: Annotated[
        list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=8)
    ]
    options: NoOptions = NoOptions()

    @field_validator("outlets")
    @classmethod
    def _distinct(cls, outlets: list[int]) -> list[int]:
        if len(set(outlets)) != len(outlets):
            raise ValueError("lists an outlet twice")
        return outlets


class SshPath(Schema):
    kind: Literal[PathKind.SSH]
    priority: Priority = 50
    address: Host
    port: TcpPort = 22
    username: Username
    secret: Secret | None = None
    options: SshOptions = SshOptions()


class LibvirtPath(Schema):
    kind: Literal[PathKind.LIBVIRT]
    priority: Priority = 10
    via: Ref
    domain: Annotated[str, StringConstraints(max_length=36)]
    options: LibvirtOptions = LibvirtOptions()

    @field_validator("domain")
    @classmethod
    def _uuid(cls, domain: str) -> str:
        if not re.fullmatch(_UUID, domain):
            raise ValueError(
                "must be the domain's UUID (as `virsh domuuid` or `xl list -l` print it); a "
                "sync of the hypervisor writes these paths (POST /api/v1/devices/{host}/sync)"
            )
        return domain.lower()


PATH_MODELS: dict[PathKind, type[Schema]] = {
    PathKind.IPMI: IpmiPath,
    PathKind.REDFISH: RedfishPath,
    PathKind.CONSOLE_PORT: ConsolePortPath,
    PathKind.PDU_OUTLET: PduOutletPath,
    PathKind.SSH: SshPath,
    PathKind.LIBVIRT: LibvirtPath,
}

PathCreate = Annotated[
    IpmiPath | RedfishPath | ConsolePortPath | PduOutletPath | SshPath | LibvirtPath,
    Field(discriminator="kind"),
]


class PathUpdate(Schema):
    """Every field optional; the merged path is validated as a whole. `secret: null` clears it.

    A change of where the secret would go (address, port, via, a pin) drops the stored secret
    unless a new one comes in the same request (`paths.repointed`).
    """

    priority: Priority | None = None
    address: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    username: Username | None = None
    secret: Secret | None = None
    via: Ref | None = None
    outlets: list[int] | None = None
    domain: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    options: dict[str, Any] | None = None


class PathRead(BaseModel):
    id: int
    kind: PathKind
    priority: int
    address: str | None
    port: int | None
    username: str | None
    secret: Literal["set"] | None
    via: str | None
    outlets: list[int] | None
    domain: str | None
    options: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class PathUpdated(PathRead):
    """A PATCH's answer: the path, and what became of its stored secret."""

    secret_change: SecretChange | None = Field(
        description="kept, replaced, cleared, dropped (the path now points elsewhere and no "
        "secret came with it) or unset; null for kinds that carry no secret"
    )
    message: str = Field("", description="what to do next, e.g. send the dropped secret again")


class DeviceDetail(DeviceRead):
    paths: list[PathRead]


# Lists, import, export -----------------------------------------------------------------------

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class ImportChange(BaseModel):
    row: int
    name: str
    action: Literal["create", "update", "unchanged"]
    changes: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="field → {before, after} for updates"
    )


class ImportResult(BaseModel):
    dry_run: bool
    created: int
    updated: int
    unchanged: int
    rows: list[ImportChange]
