"""`/`: the fleet at a glance, per site the viewer can see."""

from __future__ import annotations

from starlette.responses import Response

from app.inventory import sites
from app.web.pages import ViewerDep, page_router

router = page_router()


@router.get("/")
async def overview(viewer: ViewerDep) -> Response:
    found = await sites.list_sites(viewer.session, viewer.ctx)
    return viewer.render("overview.html", sites=found)
