"""What the health endpoints answer: the agent's own shapes (`agents.protocol`), wrapped."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from agents.protocol import Fru, Health, LogEvent, Sensor
from app.inventory.schemas import Schema
from app.jobs.schemas import Reason, Ticket


class Read(BaseModel):
    """Whose BMC answered, over which path, when."""

    device: str
    site: str
    path: str | None = Field(description="the path kind that answered: ipmi or redfish")
    read_at: datetime


class SensorsRead(Read):
    health: Health = Field(description="the worst sensor state; unknown: no sensors")
    reasons: list[str] = Field(description="one line per sensor not ok, worst first")
    sensors: list[Sensor]


class HealthVerdict(BaseModel):
    device: str
    site: str
    health: Health
    reasons: list[str]
    path: str | None
    message: str = Field(description="why it is unknown, when it is")
    checked_at: datetime | None = Field(description="the last read; null: never read")
    changed_at: datetime | None = Field(description="when the verdict last changed")


class ClearRequest(Schema):
    """Why the log is cleared; the body's ticket and reason win over X-Ticket and X-Reason."""

    ticket: Ticket | None = None
    reason: Reason | None = None


class EventsRead(Read):
    events: list[LogEvent] = Field(description="newest first")
    cleared: bool = Field(False, description="the log was cleared after these were read")


class CatalogueChange(BaseModel):
    """A catalogue field the FRU data says otherwise about."""

    field: str
    catalogue: str
    fru: str


class InventoryRead(Read):
    frus: list[Fru]
    changes: list[CatalogueChange] = Field(
        description="what copying the FRU data into the catalogue would change (empty: agrees)"
    )


class InventoryApplied(BaseModel):
    device: str
    dry_run: bool
    changes: list[CatalogueChange]


class FleetHealth(BaseModel):
    devices: list[HealthVerdict] = Field(description="in name order")
    counts: dict[Health, int] = Field(description="devices per verdict")
