"""A device's hardware health on its page: the stored verdict, and the parts read from its BMC
on demand, which htmx swaps into the Health section: `/devices/{name}/sensors` (the read
stores a new verdict, swapped in beside it), `/devices/{name}/events` and
`/devices/{name}/inventory`. Each calls the API's own read (`app.health.reads`) with the
viewer's context; a read that fails says the API's message in its part. Clearing the log and
copying FRU data into the catalogue go through the API (`static/device_health.js`)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, fields
from typing import TypeVar

from starlette.responses import Response

from agents.protocol import Fru, FruArea, Thresholds
from app.errors import DeviceUnavailable, InvalidInput
from app.health import reads
from app.health.service import HEALTH_PATHS, THRESHOLD_WORDS
from app.identity.models import Role
from app.inventory import devices
from app.inventory.models import Device
from app.inventory.schemas import PathRead
from app.uow import unit_of_work
from app.web.pages import Viewer, ViewerDep, page_router

router = page_router()
_R = TypeVar("_R")
# What a read answers instead of data (502: the BMC or agent failed; 422: no BMC path): said
# in the part, where htmx swaps it (it swaps no error status).
_UNREAD = (DeviceUnavailable, InvalidInput)
EVENTS = 500  # log entries a page shows, newest first (GET /api/v1/devices/{d}/events: more)
_AREAS = ("product", "board", "chassis")
_FIELDS = tuple(field.name for field in fields(FruArea))
# ipmitool's short names, in the order a scale reads, with the words reasons use (a title).
THRESHOLDS = tuple(
    (field.name, short, THRESHOLD_WORDS[field.name])
    for field, short in zip(
        fields(Thresholds), ("LNR", "LC", "LNC", "UNC", "UC", "UNR"), strict=True
    )
)


@dataclass(frozen=True)
class FruTable:
    """One FRU as a table: a column per area it has, a row per field any of them sets."""

    id: int
    name: str
    areas: list[str]
    rows: list[tuple[str, list[str]]]


def fru_table(fru: Fru) -> FruTable:
    present = [(name, area) for name in _AREAS if (area := getattr(fru, name)) is not None]
    rows = [
        (field.replace("_", " "), values)
        for field in _FIELDS
        if any(values := [getattr(area, field) for _, area in present])
    ]
    return FruTable(fru.id, fru.name, [name for name, _ in present], rows)


def has_bmc(paths: Sequence[PathRead]) -> bool:
    """Whether the device has a path its health is read over (ipmi, redfish)."""
    return any(path.kind in HEALTH_PATHS for path in paths)


async def _device(viewer: Viewer, name: str, what: str) -> tuple[Device, reads.Central]:
    """The device as the viewer may see it (else the 404 of a missing one), and the central
    to read it through. The page's transaction ends here: none is held while the BMC answers
    (the device, detached, keeps what was loaded for the template)."""
    device, _ = await devices.device_and_site(viewer.session, viewer.ctx, name, Role.VIEWER, what)
    viewer.session.expunge(device)
    await viewer.session.rollback()
    return device, reads.Central.of(viewer.request.app.state)


async def _tried(read: Awaitable[_R]) -> tuple[_R | None, str | None]:
    """The read's answer, or what the API would have said instead (said in the part)."""
    try:
        return await read, None
    except _UNREAD as exc:
        return None, str(exc)


@router.get("/devices/{name}/sensors")
async def sensors(viewer: ViewerDep, name: str) -> Response:
    """The sensor table, read now, and the verdict that read stored (swapped in beside it)."""
    device, central = await _device(viewer, name, "reading a device's sensors")
    read, failed = await _tried(reads.sensors(central, viewer.ctx, device.name))
    async with unit_of_work(central.sessions) as session:  # a fresh one: sees what was stored
        verdict = await reads.stored(session, viewer.ctx, device.name)
    return viewer.render(
        "device_sensors.html", read=read, failed=failed, verdict=verdict, thresholds=THRESHOLDS
    )


@router.get("/devices/{name}/events")
async def events(viewer: ViewerDep, name: str) -> Response:
    """The event log, newest first, with "Clear log" for operators of the device's site."""
    device, central = await _device(viewer, name, "reading a device's event log")
    read, failed = await _tried(reads.events(central, viewer.ctx, device.name, EVENTS + 1))
    return viewer.render(
        "device_events.html",
        device=device,
        read=read,
        failed=failed,
        shown=EVENTS,
        operator=viewer.can(Role.OPERATOR, device.site_id),
    )


@router.get("/devices/{name}/inventory")
async def inventory(viewer: ViewerDep, name: str) -> Response:
    """The FRU areas, and for admins of the site what "Copy to catalogue" would change."""
    device, central = await _device(viewer, name, "reading a device's inventory")
    read, failed = await _tried(reads.frus(central, viewer.ctx, device.name))
    return viewer.render(
        "device_inventory.html",
        device=device,
        read=read,
        failed=failed,
        frus=[fru_table(fru) for fru in read.frus] if read else [],
        admin=viewer.can(Role.ADMIN, device.site_id),
    )
