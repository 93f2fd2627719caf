"""`/sites/{slug}`: a site's facts, its racks, and a drawing of each rack (an elevation) with
its devices at their units, coloured by their last known power state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from starlette.responses import Response

from app.errors import NotFound
from app.identity.models import Role
from app.inventory import racks, sites
from app.inventory.elevation import elevations
from app.web.pages import ViewerDep, page_router

router = page_router()
# Racks drawn at once; a site with more lists them all and draws the one asked (`?rack=`).
DRAWN = 24


@router.get("/sites/{slug}")
async def site_page(
    viewer: ViewerDep,
    slug: str,
    rack: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    session, ctx = viewer.session, viewer.ctx
    site = await sites.site_for(session, ctx, slug, Role.VIEWER, "reading a site")
    found = await racks.site_racks(session, site)
    if rack is not None:
        chosen = [one for one in found if one.name == rack]
        if not chosen:
            raise NotFound(racks.no_rack(rack, site.slug))
    else:
        chosen = found[:DRAWN]
    return viewer.render(
        "site.html",
        site=site,
        racks=found,
        chosen=rack,
        drawn=await elevations(session, chosen),
        more=len(found) - len(chosen),
    )
