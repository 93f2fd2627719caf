"""Site agents as the pages say them: per site, its agents (as `GET /api/v1/agents` answers the
viewer) and since when each is in its state, by the router's own rule (`served_sites`), so a
page says "offline since" the same instant a refused power action names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request

from app.fleetlink import service
from app.fleetlink.link import LinkServer
from app.fleetlink.models import AgentStatus
from app.fleetlink.schemas import AgentRead
from app.web.pages import Viewer


def _silence(request: Request) -> timedelta:
    """How long an agent may stay quiet and still read online (the API's own answer)."""
    links: LinkServer = request.app.state.agent_links
    return links.silence


SilenceDep = Annotated[timedelta, Depends(_silence)]


@dataclass(frozen=True)
class AgentLine:
    """An agent as a page says it: "br12-a offline since …" (`agent_macros.html`)."""

    agent: AgentRead

    @property
    def online(self) -> bool:
        return self.agent.status is AgentStatus.ONLINE

    @property
    def preposition(self) -> str:
        return "at" if self.agent.status is AgentStatus.REVOKED else "since"

    @property
    def since(self) -> datetime | None:
        """Since when it is in its state: connected, revoked, or last heard of (None: it
        never connected)."""
        agent = self.agent
        if agent.status is AgentStatus.ONLINE:
            return agent.connected_since
        if agent.status is AgentStatus.REVOKED:
            return agent.revoked_at
        return agent.disconnected_at or agent.last_seen


@dataclass(frozen=True)
class SiteAgents:
    """A site served by its own agents (a site without any is reached from the central)."""

    site: str
    lines: list[AgentLine]

    @property
    def online(self) -> bool:
        return any(line.agent.status is AgentStatus.ONLINE for line in self.lines)

    @property
    def offline_since(self) -> datetime | None:
        """When the last of its agents was heard of, while none is online (None: none of them
        ever connected, or one is online)."""
        if self.online:
            return None
        heard = [
            line.since
            for line in self.lines
            if line.agent.status is AgentStatus.OFFLINE and line.since is not None
        ]
        return max(heard, default=None)


async def site_agents(
    viewer: Viewer, silence: timedelta, site: str | None = None
) -> dict[str, SiteAgents]:
    """The agents of the sites the viewer sees (or of `site`), by site slug."""
    found = await service.list_agents(viewer.session, viewer.ctx, site, silence)
    by_site: dict[str, SiteAgents] = {}
    for agent in found:
        by_site.setdefault(agent.site, SiteAgents(agent.site, [])).lines.append(AgentLine(agent))
    return by_site
