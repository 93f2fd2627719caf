"""FRU data into the catalogue: the system FRU's manufacturer, product and serial number as the
device's vendor, model and serial, shown as a diff first (docs/health.md, "Inventory")."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from agents.protocol import Fru, FruArea
from app.context import RequestContext
from app.health.schemas import CatalogueChange
from app.health.service import Machine
from app.inventory.devices import update_device
from app.inventory.models import Device
from app.inventory.schemas import DeviceUpdate

_LONGEST = 100  # the catalogue's vendor, model and serial columns


def facts(frus: Sequence[Fru]) -> dict[str, str]:
    """What the system FRU (id 0, else the first) says of vendor, model and serial: the
    product area first, then board and chassis, as inventory tools read it."""
    system = next((fru for fru in frus if fru.id == 0), frus[0] if frus else None)
    if system is None:
        return {}
    product = system.product or FruArea()
    board = system.board or FruArea()
    chassis = system.chassis or FruArea()
    found = {
        "vendor": _first(product.manufacturer, board.manufacturer),
        "model": _first(product.name, board.name),
        "serial": _first(product.serial_number, chassis.serial_number, board.serial_number),
    }
    return {name: value[:_LONGEST] for name, value in found.items() if value}


def _first(*values: str) -> str:
    return next((value.strip() for value in values if value.strip()), "")


async def changes(
    session: AsyncSession, device_id: int, frus: Sequence[Fru]
) -> list[CatalogueChange]:
    """The catalogue fields the FRU data differs from (an empty catalogue field too)."""
    device = await session.get(Device, device_id)
    if device is None:
        return []
    return _diff(device, facts(frus))


def _diff(device: Device, found: dict[str, str]) -> list[CatalogueChange]:
    return [
        CatalogueChange(field=name, catalogue=getattr(device, name), fru=value)
        for name, value in found.items()
        if getattr(device, name) != value
    ]


async def apply(
    session: AsyncSession,
    ctx: RequestContext,
    machine: Machine,
    frus: Sequence[Fru],
    *,
    dry_run: bool,
) -> list[CatalogueChange]:
    """Copy what differs; the catalogue's own update checks and audits it."""
    device = await session.get(Device, machine.device_id)
    if device is None:
        return []
    diff = _diff(device, facts(frus))
    if diff and not dry_run:
        update = DeviceUpdate.model_validate({change.field: change.fru for change in diff})
        await update_device(session, ctx, device, update)
    return diff
