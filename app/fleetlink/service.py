"""Site agents: enrolment, the join token's trade for a credential, revocation, link state.

Both secrets are 256-bit random values stored as SHA-256 digests. A join token is single use
and expires; the credential it buys works only on the agent link (`/api/v1/agents/link`), and
no user token works there.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import EventType
from app.audit.service import Actor, Event, stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import AlreadyExists, NotFound, Unauthenticated
from app.fleetlink.models import AgentStatus, SiteAgent
from app.fleetlink.schemas import AgentCreate, AgentRead
from app.identity.models import Role
from app.identity.rejections import Presented, Rejection
from app.identity.secrets import digest
from app.inventory.models import Site
from app.inventory.sites import site_for

JOIN_PREFIX = "rhj_"
CREDENTIAL_PREFIX = "rha_"


def actor_of(agent: SiteAgent, site: str) -> Actor:
    """An agent as the audit names it."""
    return Actor("agent", agent.id, f"{site}/{agent.name}")


def status_of(agent: SiteAgent, now: datetime, silence: timedelta) -> AgentStatus:
    """Online only while its central writes a fresh `last_seen`: a central that died with the
    link open leaves a stale one, and the agent reads offline."""
    if agent.revoked_at is not None:
        return AgentStatus.REVOKED
    if agent.credential_hash is None:
        return AgentStatus.PENDING
    live = agent.connected_since is not None and agent.disconnected_at is None
    if live and agent.last_seen is not None and now - agent.last_seen <= silence:
        return AgentStatus.ONLINE
    return AgentStatus.OFFLINE


def read(agent: SiteAgent, site: str, now: datetime, silence: timedelta) -> AgentRead:
    status = status_of(agent, now, silence)
    return AgentRead(
        id=agent.id,
        name=agent.name,
        site=site,
        status=status,
        version=agent.version,
        address=agent.address,
        connected_since=agent.connected_since if status is AgentStatus.ONLINE else None,
        last_seen=agent.last_seen,
        disconnected_at=agent.disconnected_at,
        tasks=agent.tasks if status is AgentStatus.ONLINE else 0,
        consoles=agent.consoles if status is AgentStatus.ONLINE else 0,
        created_at=agent.created_at,
        created_by=agent.created_by,
        join_expires_at=agent.join_expires_at if status is AgentStatus.PENDING else None,
        joined_at=agent.joined_at,
        revoked_at=agent.revoked_at,
    )


def _event(
    ctx: RequestContext, type_: EventType, agent: SiteAgent, site: str, **details: object
) -> Event:
    return ctx.event(
        type_,
        target_type="agent",
        target_id=agent.id,
        target_name=f"{site}/{agent.name}",
        site=site,
        details=dict(details),
    )


async def enrol(
    session: AsyncSession, ctx: RequestContext, data: AgentCreate
) -> tuple[SiteAgent, str]:
    """A new agent for the site, and its join token (returned once, stored as a digest)."""
    site = await site_for(session, ctx, data.site, Role.ADMIN, "enrolling agents")
    taken = await session.scalar(
        select(SiteAgent.id).where(SiteAgent.site_id == site.id, SiteAgent.name == data.name)
    )
    if taken is not None:
        raise AlreadyExists(
            f"site {site.slug} already has an agent named {data.name!r} (id {taken}); "
            "choose another name, or revoke that one first"
        )
    token = JOIN_PREFIX + secrets.token_urlsafe(32)
    agent = SiteAgent(
        site_id=site.id,
        name=data.name,
        created_by=ctx.principal.actor.name,
        join_hash=digest(token),
        join_expires_at=utcnow() + timedelta(seconds=data.expires_in),
        tasks=0,
        consoles=0,
    )
    session.add(agent)
    await session.flush()
    stage(
        session,
        _event(
            ctx,
            EventType.AGENT_ENROLLED,
            agent,
            site.slug,
            expires_at=agent.join_expires_at.isoformat(),
        ),
    )
    return agent, token


async def list_agents(
    session: AsyncSession, ctx: RequestContext, site: str | None, silence: timedelta
) -> list[AgentRead]:
    query = select(SiteAgent, Site.slug).join(Site, Site.id == SiteAgent.site_id)
    visible = ctx.principal.visible_site_ids()
    if visible is not None:
        query = query.where(SiteAgent.site_id.in_(visible))
    if site is not None:
        query = query.where(Site.slug == site)
    now = utcnow()
    rows = await session.execute(query.order_by(Site.slug, SiteAgent.name))
    return [read(agent, slug, now, silence) for agent, slug in rows]


async def get_agent(
    session: AsyncSession, ctx: RequestContext, agent_id: int, role: Role, what: str
) -> tuple[SiteAgent, str]:
    missing = f"no agent {agent_id}; list them with GET /api/v1/agents"
    found = (
        await session.execute(
            select(SiteAgent, Site.slug)
            .join(Site, Site.id == SiteAgent.site_id)
            .where(SiteAgent.id == agent_id)
        )
    ).first()
    if found is None:
        raise NotFound(missing)
    agent, slug = found
    ctx.require(
        role,
        agent.site_id,
        what=what,
        target_type="agent",
        target_id=agent.id,
        target_name=f"{slug}/{agent.name}",
        site=slug,
        missing=missing,
    )
    return agent, slug


async def revoke(
    session: AsyncSession, ctx: RequestContext, agent_id: int
) -> tuple[SiteAgent, str]:
    """Its join token and credential stop working; the central holding its link closes it."""
    agent, slug = await get_agent(session, ctx, agent_id, Role.ADMIN, "revoking agents")
    if agent.revoked_at is None:
        agent.revoked_at = utcnow()
        agent.join_hash = None
        await session.flush()
        stage(session, _event(ctx, EventType.AGENT_REVOKED, agent, slug))
    return agent, slug


async def join(
    session: AsyncSession, token: str, source_ip: str | None
) -> tuple[SiteAgent, str, str]:
    """Trade a join token for the agent's own credential, once, before it expires."""
    found = (
        await session.execute(
            select(SiteAgent, Site.slug)
            .join(Site, Site.id == SiteAgent.site_id)
            .where(SiteAgent.join_hash == digest(token))
            .with_for_update()
        )
    ).first()
    now = utcnow()
    if found is None or found[0].revoked_at is not None or found[0].join_expires_at < now:
        why = "unknown, already used, or revoked"
        if found is not None and found[0].join_expires_at < now:
            why = f"expired at {found[0].join_expires_at:%Y-%m-%d %H:%M} UTC"
        raise Unauthenticated(
            f"the join token is {why}; enrol the agent again (POST /api/v1/agents) for a new one",
            Rejection.of(Presented.JOIN, source_ip, None, "/api/v1/agents/join", None),
        )
    agent, slug = found
    credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    agent.join_hash = None
    agent.credential_hash = digest(credential)
    agent.joined_at = now
    await session.flush()
    stage(
        session,
        Event(
            EventType.AGENT_JOINED,
            actor_of(agent, slug),
            target_type="agent",
            target_id=agent.id,
            target_name=f"{slug}/{agent.name}",
            site=slug,
            source_ip=source_ip,
        ),
    )
    return agent, slug, credential


@dataclass(frozen=True)
class Credentialed:
    agent_id: int
    name: str
    site: str
    revoked: bool


async def by_credential(session: AsyncSession, credential: str) -> Credentialed | None:
    if not credential.startswith(CREDENTIAL_PREFIX):
        return None
    found = (
        await session.execute(
            select(SiteAgent, Site.slug)
            .join(Site, Site.id == SiteAgent.site_id)
            .where(SiteAgent.credential_hash == digest(credential))
        )
    ).first()
    if found is None:
        return None
    agent, slug = found
    return Credentialed(agent.id, agent.name, slug, agent.revoked_at is not None)


async def connected(
    session: AsyncSession, agent_id: int, central: str, address: str | None, version: str
) -> datetime:
    """Note a link that is up; its `connected_since`, which names this link from now on."""
    now = utcnow()
    await session.execute(
        update(SiteAgent)
        .where(SiteAgent.id == agent_id)
        .values(
            central_id=central,
            address=address,
            version=version[:64],
            connected_since=now,
            disconnected_at=None,
            last_seen=now,
            tasks=0,
            consoles=0,
        )
    )
    return now


async def seen(
    session: AsyncSession, agent_id: int, central: str, tasks: int, consoles: int
) -> bool:
    """Note a heartbeat; False when the agent was revoked (its link must close)."""
    revoked = await session.scalar(select(SiteAgent.revoked_at).where(SiteAgent.id == agent_id))
    await session.execute(
        update(SiteAgent)
        .where(SiteAgent.id == agent_id, SiteAgent.central_id == central)
        .values(last_seen=utcnow(), tasks=tasks, consoles=consoles)
    )
    return revoked is None


async def disconnected(session: AsyncSession, agent_id: int, since: datetime) -> None:
    """Note that the link connected at `since` is gone; a newer link of the agent (it dialled
    again before the old one was noticed dead) stays online."""
    await session.execute(
        update(SiteAgent)
        .where(SiteAgent.id == agent_id, SiteAgent.connected_since == since)
        .values(disconnected_at=utcnow(), tasks=0, consoles=0)
    )


@dataclass(frozen=True)
class Enrolled:
    """An agent of a site, as the router needs to name it when none is online."""

    id: int
    name: str
    status: AgentStatus
    since: datetime | None  # offline since (last seen), or None if it never connected


async def served_sites(session: AsyncSession, silence: timedelta) -> dict[str, list[Enrolled]]:
    """Sites that have agents, with each agent's state. Revoked agents still bind their site:
    revoking a branch's last agent must not hand its devices to the central unasked."""
    rows = await session.execute(
        select(SiteAgent, Site.slug)
        .join(Site, Site.id == SiteAgent.site_id)
        .order_by(SiteAgent.name)
    )
    now = utcnow()
    sites: dict[str, list[Enrolled]] = {}
    for agent, slug in rows:
        status = status_of(agent, now, silence)
        since = agent.revoked_at or agent.disconnected_at or agent.last_seen
        sites.setdefault(slug, []).append(Enrolled(agent.id, agent.name, status, since))
    return sites
