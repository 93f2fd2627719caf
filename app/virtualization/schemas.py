"""What a sync answers: per guest, what was (or, dry run, would be) done."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from agents.protocol import PowerState

Action = Literal["created", "updated", "gone", "unchanged", "skipped"]


class GuestChange(BaseModel):
    device: str
    uuid: str
    action: Action
    changes: dict[str, list[Any]] = Field(
        default_factory=dict, description="field → [before, after]"
    )
    power: PowerState | None = None
    message: str = ""
    device_id: int | None = Field(default=None, exclude=True)


class SyncResult(BaseModel):
    hypervisor: str
    dry_run: bool
    listed: int = Field(description="domains the host listed")
    created: int
    updated: int
    gone: int
    unchanged: int
    skipped: int
    guests: list[GuestChange]

    @classmethod
    def of(
        cls, hypervisor: str, dry_run: bool, listed: int, guests: list[GuestChange]
    ) -> SyncResult:
        count = Counter(guest.action for guest in guests)
        return cls(
            hypervisor=hypervisor,
            dry_run=dry_run,
            listed=listed,
            created=count["created"],
            updated=count["updated"],
            gone=count["gone"],
            unchanged=count["unchanged"],
            skipped=count["skipped"],
            guests=guests,
        )

    def counts(self) -> dict[str, int]:
        return self.model_dump(include={"listed", "created", "updated", "gone", "unchanged",
                                        "skipped"})  # fmt: skip


class GuestRead(BaseModel):
    """A guest's facts, as its host's last sync described it."""

    device: str
    uuid: str
    domain: str
    state: str
    vcpus: int
    memory_mib: int
    autostart: bool
    host: str | None = Field(description="the hypervisor it runs on")
    seen_at: datetime = Field(description="the last sync that listed it")
    gone_at: datetime | None = Field(description="its host's sync no longer listed it")
