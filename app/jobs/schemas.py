"""Request and response shapes of power, boot and jobs (docs/power.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from agents.protocol import BootDevice, Health, PowerAction, PowerState, TaskStatus
from app.inventory.models import DeviceKind, DeviceStatus
from app.inventory.schemas import Schema
from app.jobs.models import JobKind, JobStatus

Ticket = Annotated[str, Field(max_length=128, pattern=r"^[^\x00-\x1f]*$")]
Reason = Annotated[str, Field(max_length=2000)]
Wait = Annotated[float, Field(ge=0, le=300, description="seconds to wait for the result")]
TaskTimeout = Annotated[float, Field(ge=1, le=600, description="seconds per device")]


class ActionFields(Schema):
    """What every action carries; the body's ticket and reason win over the headers."""

    ticket: Ticket | None = None
    reason: Reason | None = None
    timeout: TaskTimeout = 30.0


class DevicePowerRequest(ActionFields):
    action: PowerAction
    wait: Wait = 30.0


class DeviceBootRequest(ActionFields):
    device: BootDevice
    persistent: bool = False
    wait: Wait = 30.0


class Targets(Schema):
    """The devices of a bulk action: a node range and filters, all of which must match."""

    select: Annotated[str, Field(max_length=4096)] | None = None
    site: str | None = None
    rack: str | None = None
    kind: DeviceKind | None = None
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=20)
    status: DeviceStatus | None = None
    power_state: PowerState | None = None
    health: Health | None = Field(None, description="the stored verdict on its sensors")


class BulkPowerRequest(Targets, ActionFields):
    action: PowerAction
    dry_run: bool = False
    max_targets: Annotated[int, Field(ge=1, le=100_000)] | None = None
    stagger: (
        Annotated[
            int,
            Field(ge=1, le=10_000, description="at most this many power-ons per second per site"),
        ]
        | None
    ) = None


class TaskRead(BaseModel):
    device: str
    site: str
    status: TaskStatus
    power_state: PowerState | None
    path: str | None
    message: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None


class JobRead(BaseModel):
    id: str
    kind: JobKind
    action: str
    persistent: bool
    status: JobStatus
    targets: dict[str, Any]
    total: int
    counts: dict[str, int]
    stagger: int | None
    ticket: str | None
    reason: str | None
    actor: str
    created_at: datetime
    finished_at: datetime | None
    tasks: list[TaskRead] | None = None


class DryRun(BaseModel):
    dry_run: Literal[True] = True
    action: PowerAction
    total: int
    sites: dict[str, int] = Field(default_factory=dict)  # site slug: devices matched there
    devices: list[str]
    without_power_path: list[str]
    skipped: list[str]  # without a power path and picked by a filter: the job would skip them


class ActionResult(BaseModel):
    """A single-device call's answer: the task's result, or `running` when the wait ran out."""

    device: str
    action: str
    status: TaskStatus
    power_state: PowerState | None
    path: str | None
    message: str
    job: str
