"""Sites: data centers and branch offices, the unit of access scope."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import EventType
from app.audit.service import diff, stage
from app.context import RequestContext
from app.errors import AlreadyExists, InUse, NotFound
from app.fleetlink.models import SiteAgent
from app.identity.models import Role
from app.inventory.models import Device, Rack, Site
from app.inventory.refs import as_id, unavailable
from app.inventory.schemas import SiteCreate, SiteRead, SiteUpdate


async def list_sites(session: AsyncSession, ctx: RequestContext) -> list[Site]:
    query = select(Site).order_by(Site.slug)
    visible = ctx.principal.visible_site_ids()
    if visible is not None:
        query = query.where(Site.id.in_(visible))
    return list(await session.scalars(query))


def no_site(ref: str) -> str:
    """The answer to a site that does not exist, and to one the caller cannot see."""
    return f"no site {ref!r}; list them with GET /api/v1/sites"


async def get_site(session: AsyncSession, ref: str, visible: set[int] | None = None) -> Site:
    """By slug, or by numeric id, among the `visible` sites (None: every site)."""
    site = await session.scalar(select(Site).where(Site.slug == ref))
    if site is None and (site_id := as_id(ref)) is not None:
        site = await session.get(Site, site_id)
    if site is None or (visible is not None and site.id not in visible):
        raise NotFound(no_site(ref))
    return site


async def site_for(
    session: AsyncSession, ctx: RequestContext, ref: str, role: Role, what: str
) -> Site:
    """A site the caller holds `role` at (other sites look missing, or are forbidden)."""
    site = await get_site(session, ref)
    ctx.require(
        role,
        site.id,
        what=what,
        target_type="site",
        target_id=site.id,
        target_name=site.slug,
        site=site.slug,
        missing=no_site(ref),
    )
    return site


def _snapshot(site: Site) -> dict[str, object]:
    return SiteRead.model_validate(site).model_dump(
        mode="json", exclude={"created_at", "updated_at"}
    )


async def _check_slug_free(session: AsyncSession, slug: str, visible: set[int] | None) -> None:
    existing = await session.scalar(select(Site).where(Site.slug == slug))
    if existing is None:
        return
    if visible is not None and existing.id not in visible:
        raise AlreadyExists(unavailable("site slug", slug))
    raise AlreadyExists(f"a site with slug {slug!r} already exists (id {existing.id})")


async def _check_no_agents(session: AsyncSession, site: Site) -> None:
    """A site's agents name it by its slug on their links (their hello, their enrolment at
    the site): renaming it under them would cut them off, and for a moment route its work
    to the central itself."""
    agents = list(
        await session.scalars(
            select(SiteAgent.name).where(SiteAgent.site_id == site.id).order_by(SiteAgent.name)
        )
    )
    if agents:
        raise InUse(
            f"site {site.slug} is served by its agents ({', '.join(agents)}), which know it by "
            "this slug; its slug cannot change (change its name instead)"
        )


async def create_site(session: AsyncSession, ctx: RequestContext, data: SiteCreate) -> Site:
    ctx.require(Role.ADMIN, None, what="creating sites", target_type="site", target_name=data.slug)
    await _check_slug_free(session, data.slug, ctx.principal.visible_site_ids())
    site = Site(**data.model_dump())
    session.add(site)
    await session.flush()
    stage(
        session,
        ctx.event(
            EventType.SITE_CREATED,
            target_type="site",
            target_id=site.id,
            target_name=site.slug,
            site=site.slug,
            details={"after": _snapshot(site)},
        ),
    )
    return site


async def update_site(
    session: AsyncSession, ctx: RequestContext, site: Site, data: SiteUpdate
) -> Site:
    before = _snapshot(site)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "slug" in changes and changes["slug"] != site.slug:
        await _check_slug_free(session, changes["slug"], ctx.principal.visible_site_ids())
        await _check_no_agents(session, site)
    for field, value in changes.items():
        setattr(site, field, value)
    await session.flush()
    after = _snapshot(site)
    stage(
        session,
        ctx.event(
            EventType.SITE_UPDATED,
            target_type="site",
            target_id=site.id,
            target_name=site.slug,
            site=site.slug,
            details=diff(before, after),
        ),
    )
    return site


async def delete_site(session: AsyncSession, ctx: RequestContext, site: Site) -> None:
    ctx.require(
        Role.ADMIN,
        None,
        what="deleting sites",
        target_type="site",
        target_id=site.id,
        target_name=site.slug,
        site=site.slug,
    )
    ctx.require_ticket(site.slug, site.require_ticket, "deleting it")
    devices = await session.scalar(select(func.count()).where(Device.site_id == site.id))
    racks = await session.scalar(select(func.count()).where(Rack.site_id == site.id))
    if devices or racks:
        raise InUse(
            f"site {site.slug!r} still holds {devices} devices and {racks} racks; "
            "move or delete them first"
        )
    before = _snapshot(site)
    await session.delete(site)
    await session.flush()
    stage(
        session,
        ctx.event(
            EventType.SITE_DELETED,
            target_type="site",
            target_id=site.id,
            target_name=site.slug,
            site=site.slug,
            details={"before": before},
        ),
    )
