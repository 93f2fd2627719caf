"""Racks: named within their site, with a height in rack units."""

from __future__ import annotations

import contextlib

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import EventType
from app.audit.service import diff, stage
from app.context import RequestContext
from app.errors import AlreadyExists, AmbiguousReference, InUse, InvalidInput, NotFound
from app.identity.models import Role
from app.inventory.models import Device, Rack, Site
from app.inventory.refs import as_id
from app.inventory.schemas import RackCreate, RackRead, RackUpdate
from app.inventory.sites import get_site, site_for


def to_read(rack: Rack, site: Site) -> RackRead:
    return RackRead(
        id=rack.id,
        site=site.slug,
        name=rack.name,
        height_u=rack.height_u,
        description=rack.description,
        created_at=rack.created_at,
        updated_at=rack.updated_at,
    )


def _snapshot(rack: Rack, site: Site) -> dict[str, object]:
    return to_read(rack, site).model_dump(mode="json", exclude={"created_at", "updated_at"})


async def list_racks(
    session: AsyncSession, ctx: RequestContext, site_ref: str | None = None
) -> list[RackRead]:
    if site_ref is not None:
        site = await site_for(session, ctx, site_ref, Role.VIEWER, "listing racks")
        return await site_racks(session, site)
    query = select(Rack, Site).join(Site, Rack.site_id == Site.id).order_by(Site.slug, Rack.name)
    visible = ctx.principal.visible_site_ids()
    if visible is not None:
        query = query.where(Rack.site_id.in_(visible))
    return [to_read(rack, site) for rack, site in await session.execute(query)]


async def site_racks(session: AsyncSession, site: Site) -> list[RackRead]:
    """The racks of a site in name order; the caller has found `site` through the ctx's checks
    (`site_for`), as `GET /racks?site=` does."""
    rows = await session.scalars(select(Rack).where(Rack.site_id == site.id).order_by(Rack.name))
    return [to_read(rack, site) for rack in rows]


def no_rack(ref: str, site_ref: str | None = None) -> str:
    """The answer to a rack that does not exist, and to one the caller cannot see."""
    where = f" at site {site_ref!r}" if site_ref else ""
    return f"no rack {ref!r}{where}; list them with GET /api/v1/racks"


async def get_rack(
    session: AsyncSession, ref: str, site_ref: str | None = None, visible: set[int] | None = None
) -> tuple[Rack, Site]:
    """By id, or by name (unique within a site; give the site when two sites share a name),
    among the `visible` sites (None: every site): another site's rack of the same name is
    neither a match nor a reason to call the name ambiguous."""
    query = select(Rack, Site).join(Site, Rack.site_id == Site.id).where(Rack.name == ref)
    if site_ref is not None:
        site = await get_site(session, site_ref, visible)
        query = query.where(Rack.site_id == site.id)
    elif visible is not None:
        query = query.where(Rack.site_id.in_(sorted(visible)))
    found = list(await session.execute(query))
    rack_id = as_id(ref)
    if not found and rack_id is not None and site_ref is None:
        by_id = select(Rack, Site).join(Site, Rack.site_id == Site.id).where(Rack.id == rack_id)
        if visible is not None:
            by_id = by_id.where(Rack.site_id.in_(sorted(visible)))
        found = list(await session.execute(by_id))
    if not found:
        raise NotFound(no_rack(ref, site_ref))
    if len(found) > 1:
        sites = ", ".join(sorted(site.slug for _, site in found))
        raise AmbiguousReference(
            f"rack name {ref!r} exists at sites {sites}; add ?site=<slug> or use the rack id"
        )
    rack, site = found[0]
    return rack, site


async def rack_for(
    session: AsyncSession,
    ctx: RequestContext,
    ref: str,
    site_ref: str | None,
    role: Role,
    what: str,
) -> tuple[Rack, Site]:
    """A rack the caller holds `role` at; one at a site it cannot see looks missing (audited)."""
    visible = ctx.principal.visible_site_ids()
    try:
        rack, site = await get_rack(session, ref, site_ref, visible)
    except NotFound as missing:
        if visible is not None:
            with contextlib.suppress(NotFound, AmbiguousReference):
                rack, site = await get_rack(session, ref, site_ref)
                ctx.require(role, site.id, what=what, target_type="rack", target_id=rack.id,
                            target_name=rack.name, site=site.slug,
                            missing=str(missing))  # fmt: skip
        raise
    ctx.require(
        role,
        site.id,
        what=what,
        target_type="rack",
        target_id=rack.id,
        target_name=rack.name,
        site=site.slug,
    )
    return rack, site


async def create_rack(session: AsyncSession, ctx: RequestContext, data: RackCreate) -> RackRead:
    site = await site_for(session, ctx, data.site, Role.ADMIN, "creating racks")
    existing = await session.scalar(
        select(Rack).where(Rack.site_id == site.id, Rack.name == data.name)
    )
    if existing is not None:
        raise AlreadyExists(
            f"site {site.slug!r} already has a rack {data.name!r} (id {existing.id})"
        )
    rack = Rack(
        site_id=site.id, name=data.name, height_u=data.height_u, description=data.description
    )
    session.add(rack)
    await session.flush()
    stage(
        session,
        ctx.event(
            EventType.RACK_CREATED,
            target_type="rack",
            target_id=rack.id,
            target_name=rack.name,
            site=site.slug,
            details={"after": _snapshot(rack, site)},
        ),
    )
    return to_read(rack, site)


async def update_rack(
    session: AsyncSession, ctx: RequestContext, rack: Rack, site: Site, data: RackUpdate
) -> RackRead:
    before = _snapshot(rack, site)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "name" in changes and changes["name"] != rack.name:
        taken = await session.scalar(
            select(Rack.id).where(Rack.site_id == rack.site_id, Rack.name == changes["name"])
        )
        if taken is not None:
            raise AlreadyExists(f"site {site.slug!r} already has a rack {changes['name']!r}")
    if "height_u" in changes:
        top = await session.scalar(
            select(func.max(Device.position_u + Device.height_u - 1)).where(
                Device.rack_id == rack.id, Device.position_u.is_not(None)
            )
        )
        if top is not None and top > changes["height_u"]:
            raise InvalidInput(
                f"rack {rack.name!r} has a device up to U{top}; it cannot shrink to "
                f"{changes['height_u']}U"
            )
    for field, value in changes.items():
        setattr(rack, field, value)
    await session.flush()
    stage(
        session,
        ctx.event(
            EventType.RACK_UPDATED,
            target_type="rack",
            target_id=rack.id,
            target_name=rack.name,
            site=site.slug,
            details=diff(before, _snapshot(rack, site)),
        ),
    )
    return to_read(rack, site)


async def delete_rack(session: AsyncSession, ctx: RequestContext, rack: Rack, site: Site) -> None:
    ctx.require_ticket(site.slug, site.require_ticket, "deleting a rack")
    devices = await session.scalar(select(func.count()).where(Device.rack_id == rack.id))
    if devices:
        raise InUse(f"rack {rack.name!r} still holds {devices} devices; move or delete them first")
    before = _snapshot(rack, site)
    await session.delete(rack)
    await session.flush()
    stage(
        session,
        ctx.event(
            EventType.RACK_DELETED,
            target_type="rack",
            target_id=rack.id,
            target_name=rack.name,
            site=site.slug,
            details={"before": before},
        ),
    )
