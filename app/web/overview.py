"""`/`: the fleet at a glance, per site the viewer can see; every number links to the list it
counts, in that list's own filter names (`/devices?site=&kind=`, `…&power=off|unreachable`,
`…&health=critical|warning|ok|unknown`,
`/jobs?site=&status=running`, `/consoles?site=`), and whether its own agents serve it, with their
states (linking to `/admin/agents?site=`)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response

from agents.protocol import Health, PowerState
from app.consoles import service as consoles
from app.inventory.models import DeviceKind
from app.inventory.summary import SiteCounts, site_counts
from app.jobs.listing import running_per_site
from app.jobs.models import JobStatus
from app.web.device_list import PowerFilter
from app.web.pages import ViewerDep, link, page_router
from app.web.site_agents import SilenceDep, SiteAgents, site_agents

router = page_router()
HEALTH_ORDER = (Health.CRITICAL, Health.WARNING, Health.OK, Health.UNKNOWN)  # worst first


@dataclass(frozen=True)
class Count:
    label: str
    number: int
    href: str


@dataclass(frozen=True)
class SiteCard:
    counts: SiteCounts
    kinds: list[Count]
    power: list[Count]
    health: list[tuple[Health, Count]]
    unreachable: Count
    jobs: Count
    consoles: Count
    agents: SiteAgents | None  # None: reached from the central


def card(counts: SiteCounts, jobs: int, consoles_open: int, agents: SiteAgents | None) -> SiteCard:
    slug = counts.site.slug
    kinds = [
        Count(
            kind.value.replace("_", " "),
            counts.kinds[kind],
            link("/devices", {"site": slug, "kind": kind}),
        )
        for kind in DeviceKind
        if counts.kinds[kind]
    ]
    power = [
        Count(state.value, counts.power[state], link("/devices", {"site": slug, "power": state}))
        for state in PowerState
    ]
    health = [
        (
            verdict,
            Count(
                f"{verdict} health",
                counts.health[verdict],
                link("/devices", {"site": slug, "health": verdict}),
            ),
        )
        for verdict in HEALTH_ORDER
    ]
    return SiteCard(
        counts,
        kinds,
        power,
        health,
        Count(
            "unreachable BMCs",
            counts.unreachable,
            link("/devices", {"site": slug, "power": PowerFilter.UNREACHABLE}),
        ),
        Count("running jobs", jobs, link("/jobs", {"site": slug, "status": JobStatus.RUNNING})),
        Count("open consoles", consoles_open, link("/consoles", {"site": slug})),
        agents,
    )


@router.get("/")
async def overview(viewer: ViewerDep, silence: SilenceDep) -> Response:
    found = await site_counts(viewer.session, viewer.ctx)
    jobs = await running_per_site(viewer.session, viewer.ctx)
    live = await consoles.live_per_site(viewer.session, viewer.ctx)
    agents = await site_agents(viewer, silence)
    cards = [
        card(counts, jobs[counts.site.id], live[counts.site.id], agents.get(counts.site.slug))
        for counts in found
    ]
    return viewer.render("overview.html", cards=cards)
