"""Sites: data centers and branch offices."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import AlreadyExists, InUse, NotFound
from app.inventory.models import Device, Rack, Site
from app.inventory.refs import as_id
from app.inventory.schemas import SiteCreate, SiteUpdate


async def list_sites(session: AsyncSession) -> list[Site]:
    return list(await session.scalars(select(Site).order_by(Site.slug)))


async def get_site(session: AsyncSession, ref: str) -> Site:
    """By slug, or by numeric id."""
    site = await session.scalar(select(Site).where(Site.slug == ref))
    if site is None and (site_id := as_id(ref)) is not None:
        site = await session.get(Site, site_id)
    if site is None:
        raise NotFound(f"no site {ref!r}; list them with GET /api/v1/sites")
    return site


async def _check_slug_free(session: AsyncSession, slug: str) -> None:
    existing = await session.scalar(select(Site).where(Site.slug == slug))
    if existing is not None:
        raise AlreadyExists(f"a site with slug {slug!r} already exists (id {existing.id})")


async def create_site(session: AsyncSession, data: SiteCreate) -> Site:
    await _check_slug_free(session, data.slug)
    site = Site(**data.model_dump())
    session.add(site)
    await session.flush()
    return site


async def update_site(session: AsyncSession, site: Site, data: SiteUpdate) -> Site:
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "slug" in changes and changes["slug"] != site.slug:
        await _check_slug_free(session, changes["slug"])
    for field, value in changes.items():
        setattr(site, field, value)
    await session.flush()
    return site


async def delete_site(session: AsyncSession, site: Site) -> None:
    devices = await session.scalar(select(func.count()).where(Device.site_id == site.id))
    racks = await session.scalar(select(func.count()).where(Rack.site_id == site.id))
    if devices or racks:
        raise InUse(
            f"site {site.slug!r} still holds {devices} devices and {racks} racks; "
            "move or delete them first"
        )
    await session.delete(site)
    await session.flush()
