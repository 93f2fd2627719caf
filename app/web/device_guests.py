"""A hypervisor's guests on its page, and `/devices/{name}/guests`, the part of it that the
page swaps in again after a sync (`static/device.js` runs the sync through the API: a dry
run first, then the real one)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from agents.protocol import PowerState
from app.context import RequestContext
from app.identity.models import Role
from app.inventory import devices
from app.inventory.models import Device, PowerStatus
from app.virtualization import guests
from app.virtualization.schemas import GuestRead
from app.web.pages import ViewerDep, page_router

router = page_router()


@dataclass(frozen=True)
class GuestLine:
    """A guest as its host's syncs described it, with its device's last power read."""

    guest: GuestRead
    power: PowerState


async def of_host(session: AsyncSession, ctx: RequestContext, host: str) -> list[GuestLine]:
    """The hypervisor's guests, gone ones last (the API's order)."""
    found = await guests.of_host(session, ctx, host)
    names = [guest.device for guest in found]
    rows = await session.execute(
        select(Device.name, PowerStatus)
        .join(PowerStatus, PowerStatus.device_id == Device.id)
        .where(Device.name.in_(names))
    )
    power = {name: devices.stored_state(status) for name, status in rows}
    return [GuestLine(guest, power.get(guest.device, PowerState.UNKNOWN)) for guest in found]


@router.get("/devices/{name}/guests")
async def guest_list(viewer: ViewerDep, name: str) -> Response:
    """The guest list alone, as the device page shows it (htmx swaps it in after a sync)."""
    device, _ = await devices.device_and_site(
        viewer.session, viewer.ctx, name, Role.VIEWER, "reading a hypervisor's guests"
    )
    return viewer.render(
        "device_guests.html",
        device=device,
        guests=await of_host(viewer.session, viewer.ctx, device.name),
        operator=viewer.can(Role.OPERATOR, device.site_id),
    )
