"""Reading guests: a hypervisor's, and a guest's own facts with its host."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.context import RequestContext
from app.errors import NotFound
from app.identity.models import Role
from app.inventory.devices import device_for
from app.inventory.models import Device
from app.virtualization.models import Guest
from app.virtualization.schemas import GuestRead


async def of_host(session: AsyncSession, ctx: RequestContext, ref: str) -> list[GuestRead]:
    """The guests whose device has this host as parent (gone ones last, then by name)."""
    host = await device_for(session, ctx, ref, Role.VIEWER, "reading a hypervisor's guests")
    rows = await session.execute(
        select(Guest, Device.name)
        .join(Device, Device.id == Guest.device_id)
        .where(Device.parent_id == host.id)
        .order_by(Guest.gone_at.is_not(None), Device.name)
    )
    return [_read(guest, name, host.name) for guest, name in rows]


async def of_vm(session: AsyncSession, ctx: RequestContext, ref: str) -> GuestRead:
    device = await device_for(session, ctx, ref, Role.VIEWER, "reading a guest")
    guest = await of_device(session, device)
    if guest is None:
        raise NotFound(
            f"{device.name} is no synced guest: no sync of a hypervisor listed it "
            "(POST /api/v1/devices/{hypervisor}/sync)"
        )
    return guest


async def of_device(session: AsyncSession, device: Device) -> GuestRead | None:
    """The guest behind a `vm` device, with its host's name; None if no sync found it."""
    parent = aliased(Device)
    row = (
        await session.execute(
            select(Guest, Device.name, parent.name)
            .join(Device, Device.id == Guest.device_id)
            .outerjoin(parent, parent.id == Device.parent_id)
            .where(Guest.device_id == device.id)
        )
    ).first()
    if row is None:
        return None
    guest, name, host = row
    return _read(guest, name, host)


def _read(guest: Guest, device: str, host: str | None) -> GuestRead:
    return GuestRead(
        device=device,
        uuid=guest.uuid,
        domain=guest.domain,
        state=guest.state,
        vcpus=guest.vcpus,
        memory_mib=guest.memory_mib,
        autostart=guest.autostart,
        host=host,
        seen_at=guest.seen_at,
        gone_at=guest.gone_at,
    )
