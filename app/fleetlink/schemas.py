"""API shapes of site agents: enrolment, the join trade, and what the list shows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.fleetlink.models import AgentStatus

NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str = Field(
        min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$", description="the site's slug"
    )
    name: str = Field(pattern=NAME, description="unique within the site, e.g. br12-a")
    expires_in: int = Field(
        3600, ge=60, le=7 * 86400, description="seconds the join token stays usable"
    )


class AgentEnrolled(BaseModel):
    id: int
    name: str
    site: str
    join_token: str = Field(description="shown once; single use")
    expires_at: datetime
    command: str = Field(description="what to run at the site")


class JoinBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    join_token: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")


class Joined(BaseModel):
    id: int
    name: str
    site: str
    credential: str = Field(description="the agent's own credential; kept in its data folder")


class AgentRead(BaseModel):
    id: int
    name: str
    site: str
    status: AgentStatus
    version: str | None
    address: str | None
    connected_since: datetime | None
    last_seen: datetime | None
    disconnected_at: datetime | None
    tasks: int = Field(description="tasks in flight on the agent (at its last heartbeat)")
    consoles: int = Field(description="console sessions the agent holds")
    created_at: datetime
    created_by: str
    join_expires_at: datetime | None = Field(description="while pending: the join token's end")
    joined_at: datetime | None
    revoked_at: datetime | None
