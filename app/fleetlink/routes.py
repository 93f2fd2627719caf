"""HTTP routes of site agents (enrol, list, revoke, the join trade) and the agents' link."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, WebSocket, status

from app.db import utcnow
from app.deps import SessionDep, WriteSessionsDep, own_transactions
from app.fleetlink import service
from app.fleetlink.hub import AgentHub
from app.fleetlink.link import LinkServer
from app.fleetlink.schemas import AgentCreate, AgentEnrolled, AgentRead, JoinBody, Joined
from app.identity.auth import Ctx, source_ip
from app.identity.models import Role
from app.inventory.refs import MAX_ID
from app.uow import unit_of_work

router = APIRouter(tags=["agents"])
AgentId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _links(request: Request | WebSocket) -> LinkServer:
    links: LinkServer = request.app.state.agent_links
    return links


def _hub(request: Request) -> AgentHub:
    hub: AgentHub = request.app.state.agents
    return hub


def join_command(central: str, token: str) -> str:
    """What to run at the site (docs/agents.md)."""
    return (
        f"rackhand agent --central {central} --join-token {token} "
        "--data-dir /var/lib/rackhand-agent"
    )


@router.post("/agents", status_code=status.HTTP_201_CREATED)
@own_transactions
async def enrol_agent(
    request: Request, sessions: WriteSessionsDep, ctx: Ctx, body: AgentCreate
) -> AgentEnrolled:
    """Enrol an agent for a site (admin): its join token is shown once, single use, expiring.
    From then on the site is served by its agents only."""
    async with unit_of_work(sessions) as session:
        agent, token = await service.enrol(session, ctx, body)
    await _hub(request).refresh()
    central = str(request.base_url).rstrip("/")
    return AgentEnrolled(
        id=agent.id,
        name=agent.name,
        site=body.site,
        join_token=token,
        expires_at=agent.join_expires_at,
        command=join_command(central, token),
    )


@router.get("/agents")
async def list_agents(
    request: Request, session: SessionDep, ctx: Ctx, site: Annotated[str | None, Query()] = None
) -> list[AgentRead]:
    """Agents of the sites the caller sees, with their link's state."""
    return await service.list_agents(session, ctx, site, _links(request).silence)


@router.get("/agents/{agent_id}")
async def get_agent(
    request: Request, session: SessionDep, ctx: Ctx, agent_id: AgentId
) -> AgentRead:
    agent, site = await service.get_agent(session, ctx, agent_id, Role.VIEWER, "reading agents")
    return service.read(agent, site, utcnow(), _links(request).silence)


@router.delete("/agents/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
@own_transactions
async def revoke_agent(
    request: Request, sessions: WriteSessionsDep, ctx: Ctx, agent_id: AgentId
) -> Response:
    """Revoke (admin): the credential never works again and the link closes within seconds."""
    async with unit_of_work(sessions) as session:
        agent, _ = await service.revoke(session, ctx, agent_id)
    _links(request).revoked(agent.id)
    await _hub(request).refresh()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/agents/join")
@own_transactions
async def join(request: Request, sessions: WriteSessionsDep, body: JoinBody) -> Joined:
    """The agent's first start: its join token (once) for its own credential. No user
    credential is asked: the join token is the credential."""
    async with unit_of_work(sessions) as session:
        agent, site, credential = await service.join(session, body.join_token, source_ip(request))
    await _hub(request).refresh()
    return Joined(id=agent.id, name=agent.name, site=site, credential=credential)


@router.websocket("/agents/link")
async def link(websocket: WebSocket) -> None:
    """A site agent's link (its credential as `Authorization: Bearer rha_…`; docs/agents.md)."""
    await _links(websocket).serve(websocket)
