"""A rack's elevation: what sits at which unit, top to bottom, with each device's last known
power state, for the site page's drawing. Reads only racks the caller found through the ctx's
checks (`list_racks`), one query for all of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agents.protocol import PowerState
from app.inventory.models import Device, DeviceKind, PowerStatus
from app.inventory.schemas import RackRead

_STATES = frozenset(state.value for state in PowerState)


@dataclass(frozen=True)
class Mounted:
    name: str
    kind: DeviceKind
    position_u: int | None
    height_u: int
    power_state: PowerState

    @property
    def top_u(self) -> int:
        return (self.position_u or 0) + self.height_u - 1


@dataclass(frozen=True)
class Slot:
    """A run of units, drawn as one block: a device, or empty units. `row` counts grid rows
    from the top (the rack's highest unit is row 1)."""

    top_u: int
    bottom_u: int
    row: int
    device: Mounted | None = None

    @property
    def span(self) -> int:
        return self.top_u - self.bottom_u + 1


@dataclass
class Elevation:
    rack: RackRead
    mounted: list[Mounted] = field(default_factory=list)  # with a position, lowest first
    loose: list[Mounted] = field(default_factory=list)  # in the rack, without a position

    def slots(self) -> list[Slot]:
        """Top to bottom: each device at its units, the empty runs between them."""
        height = self.rack.height_u
        by_top = sorted(self.mounted, key=lambda one: one.top_u, reverse=True)
        found: list[Slot] = []
        unit = height  # the highest unit not drawn yet
        for one in by_top:
            top, bottom = one.top_u, one.position_u
            if bottom is None or bottom < 1 or top > unit:  # the catalogue forbids overlaps
                continue
            if top < unit:
                found.append(Slot(unit, top + 1, height - unit + 1))
            found.append(Slot(top, bottom, height - top + 1, one))
            unit = bottom - 1
        if unit >= 1:
            found.append(Slot(unit, 1, height - unit + 1))
        return found

    @property
    def used_u(self) -> int:
        return sum(one.height_u for one in self.mounted)


async def elevations(session: AsyncSession, racks: Sequence[RackRead]) -> list[Elevation]:
    """The contents of these racks (found by the caller through `list_racks`, so visible)."""
    drawn = {rack.id: Elevation(rack) for rack in racks}
    if not drawn:
        return []
    rows = await session.execute(
        select(
            Device.rack_id,
            Device.name,
            Device.kind,
            Device.position_u,
            Device.height_u,
            func.coalesce(PowerStatus.state, PowerState.UNKNOWN.value),
        )
        .outerjoin(PowerStatus, PowerStatus.device_id == Device.id)
        .where(Device.rack_id.in_(sorted(drawn)))
        .order_by(Device.position_u, Device.name)
    )
    for rack_id, name, kind, position_u, height_u, state in rows:
        if rack_id is None:  # never: the query asks for these racks
            continue
        power = PowerState(state) if state in _STATES else PowerState.UNKNOWN
        one = Mounted(name, DeviceKind(kind), position_u, height_u, power)
        elevation = drawn[rack_id]
        (elevation.loose if position_u is None else elevation.mounted).append(one)
    return list(drawn.values())
