"""`/admin`: users, API tokens, webhooks and site agents, each page read through the same
service as its API route with the viewer's context (so a page shows what the API would answer
them, and refuses what it would refuse). Every change is the browser's call to the REST API
(`admin.js`).

Who sees what: users are for admins of every site; tokens for everyone (their own; an admin of
every site sees all); webhooks for admins of some site (those within their sites); site agents
for anyone with a site (those of their sites, as `GET /agents`; enrol and revoke for its admins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Path, Query
from starlette.responses import Response

from app.fleetlink.models import AgentStatus
from app.identity import service as identity
from app.identity import tokens
from app.identity.models import Role
from app.identity.schemas import MAX_TOKEN_DAYS, GrantRead
from app.inventory import sites
from app.inventory.models import Site
from app.inventory.refs import MAX_ID
from app.web.pages import Viewer, ViewerDep, page_router
from app.web.site_agents import SilenceDep, site_agents
from app.webhooks import service as webhooks
from app.webhooks.models import DeliveryStatus, WebhookEvent

router = page_router()
DELIVERIES_SHOWN = 100
TOKEN_DAYS_DEFAULT = 90
JOIN_HOURS_DEFAULT = 1
JOIN_HOURS_MAX = 7 * 24  # as long as POST /agents lets a join token live


@dataclass(frozen=True)
class Section:
    """A page of the admin area the viewer may use."""

    href: str
    title: str
    text: str


def _sections(viewer: Viewer) -> list[Section]:
    shown = [
        Section(
            "/admin/tokens",
            "API tokens",
            "Tokens for scripts, with at most your own rights"
            + ("; every user's, as an admin of every site." if viewer.can(Role.ADMIN) else "."),
        )
    ]
    if viewer.can(Role.ADMIN):
        shown.append(Section("/admin/users", "Users", "People, their roles per site, logins."))
    if viewer.can_anywhere(Role.ADMIN):
        shown.append(
            Section("/admin/webhooks", "Webhooks", "Signed notices when jobs and consoles end.")
        )
    if viewer.can_anywhere(Role.VIEWER):
        shown.append(
            Section(
                "/admin/agents",
                "Site agents",
                "The agents serving your sites and their links"
                + (
                    "; enrol and revoke them."
                    if viewer.can_anywhere(Role.ADMIN)
                    else " (admins of a site enrol and revoke them)."
                ),
            )
        )
    return shown


async def _own_grants(viewer: Viewer) -> list[GrantRead]:
    return await identity.describe(viewer.session, viewer.ctx.principal.grants)


@router.get("/admin")
async def admin_index(viewer: ViewerDep) -> Response:
    return viewer.render("admin.html", sections=_sections(viewer), grants=await _own_grants(viewer))


@router.get("/admin/users")
async def admin_users(viewer: ViewerDep) -> Response:
    users = await identity.list_users(viewer.session, viewer.ctx)  # admins of every site
    return viewer.render(
        "admin_users.html",
        users=users,
        sites=await sites.list_sites(viewer.session, viewer.ctx),
        roles=list(Role),
        me=viewer.ctx.principal.user_id,
    )


@router.get("/admin/tokens")
async def admin_tokens(viewer: ViewerDep) -> Response:
    found = await tokens.list_tokens(viewer.session, viewer.ctx)
    return viewer.render(
        "admin_tokens.html",
        tokens=found,
        everyone=viewer.can(Role.ADMIN),
        roles=tokens.token_roles(viewer.ctx.principal),  # those POST /tokens accepts
        sites=await sites.list_sites(viewer.session, viewer.ctx),
        max_days=MAX_TOKEN_DAYS,
        default_days=TOKEN_DAYS_DEFAULT,
    )


def _admin_sites(viewer: Viewer, visible: list[Site]) -> list[Site]:
    """The sites where the viewer is an admin: those a webhook of theirs may cover, and where
    they may enrol and revoke agents (as the API asks)."""
    return [site for site in visible if viewer.can(Role.ADMIN, site.id)]


@router.get("/admin/webhooks")
async def admin_webhooks(viewer: ViewerDep) -> Response:
    found = await webhooks.listing(viewer.session, viewer.ctx)  # refuses a non-admin, audited
    visible = await sites.list_sites(viewer.session, viewer.ctx)
    return viewer.render(
        "admin_webhooks.html",
        webhooks=found,
        sites=_admin_sites(viewer, visible),
        every_site=viewer.can(Role.ADMIN),
        events=list(WebhookEvent),
    )


@router.get("/admin/webhooks/{webhook_id}")
async def admin_webhook(
    viewer: ViewerDep, webhook_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> Response:
    webhook, scope = await webhooks.get(
        viewer.session, viewer.ctx, webhook_id, "reading webhook deliveries"
    )
    rows = await webhooks.deliveries(
        viewer.session, webhook, status=None, limit=DELIVERIES_SHOWN, before=None
    )
    visible = await sites.list_sites(viewer.session, viewer.ctx)
    return viewer.render(
        "admin_webhook.html",
        webhook=webhooks.to_read(webhook, scope),
        deliveries=[webhooks.delivery_read(row) for row in rows],
        sites=_admin_sites(viewer, visible),
        every_site=viewer.can(Role.ADMIN),
        events=list(WebhookEvent),
        pending=DeliveryStatus.PENDING,
        shown=DELIVERIES_SHOWN,
    )


@router.get("/admin/agents")
async def admin_agents(
    viewer: ViewerDep, silence: SilenceDep, site: Annotated[str | None, Query()] = None
) -> Response:
    found = await site_agents(viewer, silence, site)
    visible = await sites.list_sites(viewer.session, viewer.ctx)
    admin_of = _admin_sites(viewer, visible)
    return viewer.render(
        "admin_agents.html",
        lines=[line for served in found.values() for line in served.lines],
        site=site,
        sites=admin_of,  # where the viewer may enrol
        revocable={s.slug for s in admin_of},
        default_hours=JOIN_HOURS_DEFAULT,
        max_hours=JOIN_HOURS_MAX,
        AgentStatus=AgentStatus,
    )
