"""API tokens: made (at most their maker's rights, within a year), listed, revoked.

A token made with another API token is its child: it never outlives its parent and is revoked
with it, so revoking one token ends every token made from it. A token made from an
interactive login (the dashboard session, a one-hour password-flow token) stands on its own:
the person who made it had just typed their password.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import EventType
from app.audit.service import stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import Forbidden, NotFound
from app.identity import secrets
from app.identity.models import ApiToken, Role, TokenKind, User
from app.identity.principal import Credential, Principal
from app.identity.schemas import GrantSpec, TokenCreate, TokenCreated, TokenRead
from app.identity.service import describe, replace_grants, resolve_specs, token_grants

ACCESS_TOKEN_TTL = timedelta(hours=1)


async def _read_token(session: AsyncSession, token: ApiToken, owner: str) -> TokenRead:
    return TokenRead(
        id=token.id,
        name=token.name,
        kind=token.kind,
        prefix=token.prefix,
        user=owner,
        parent=token.parent_id,
        grants=await describe(session, await token_grants(session, token.id)),
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


async def issue_access_token(session: AsyncSession, user: User) -> str:
    """The password flow's token: the user's own rights, for one hour."""
    raw = secrets.new_token()
    session.add(
        ApiToken(
            user_id=user.id,
            name="access",
            kind=TokenKind.ACCESS,
            prefix=raw[:10],
            token_hash=secrets.digest(raw),
            expires_at=utcnow() + ACCESS_TOKEN_TTL,
        )
    )
    await session.flush()
    return raw


def token_roles(principal: Principal) -> list[Role]:
    """The roles a token of this caller may hold (on some of its sites): none above its own
    strongest. `POST /tokens` refuses any other; the tokens page offers only these."""
    return [
        role for role in Role if any(principal.allows(role, site) for _, site in principal.grants)
    ]


async def create_token(
    session: AsyncSession, ctx: RequestContext, data: TokenCreate
) -> TokenCreated:
    """A token for scripts: at most the creator's own rights, shown once, stored hashed."""
    principal = ctx.principal
    if data.sites is None:
        pairs = [
            (data.role, site) for _, site in principal.grants if principal.allows(data.role, site)
        ]
        pairs = list(dict.fromkeys(pairs))
    else:
        specs = [GrantSpec(role=data.role, sites=data.sites)]
        pairs = await resolve_specs(session, specs, principal.visible_site_ids())
    if (
        data.role not in token_roles(principal)
        or not pairs
        or not all(principal.allows(role, site) for role, site in pairs)
    ):
        raise Forbidden(
            f"a token cannot hold more than you: you lack {data.role} on some of those sites",
            ctx.event(
                EventType.ACCESS_DENIED,
                outcome="denied",
                details={
                    "action": "creating a token",
                    "role": data.role.value,
                    "sites": data.sites,
                },
            ),
        )
    expires = utcnow() + timedelta(days=data.expires_in_days)
    parent = None
    if principal.credential is Credential.API and principal.token_id is not None:
        parent = await session.get(ApiToken, principal.token_id)
    if parent is not None:
        expires = min(expires, parent.expires_at)  # days cannot say "in 40 minutes": clamped
    raw = secrets.new_token()
    token = ApiToken(
        user_id=principal.user_id,
        parent_id=parent.id if parent is not None else None,
        name=data.name,
        kind=TokenKind.API,
        prefix=raw[:10],
        token_hash=secrets.digest(raw),
        expires_at=expires,
    )
    session.add(token)
    await session.flush()
    await replace_grants(session, pairs, token_id=token.id)
    owner = await session.scalar(select(User.username).where(User.id == principal.user_id)) or "?"
    read = await _read_token(session, token, owner)
    stage(
        session,
        ctx.event(
            EventType.TOKEN_CREATED,
            target_type="token",
            target_id=token.id,
            target_name=token.name,
            details={"after": read.model_dump(mode="json")},
        ),
    )
    return TokenCreated(**read.model_dump(), token=raw)


async def list_tokens(session: AsyncSession, ctx: RequestContext) -> list[TokenRead]:
    query = (
        select(ApiToken, User.username)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.kind == TokenKind.API)
    )
    if not ctx.principal.allows(Role.ADMIN, None):
        query = query.where(ApiToken.user_id == ctx.principal.user_id)
    rows = await session.execute(query.order_by(ApiToken.id))
    return [await _read_token(session, token, owner) for token, owner in rows]


async def revoke_token(session: AsyncSession, ctx: RequestContext, token_id: int) -> None:
    """Revoke the token and, with it, every token made from it (children, theirs, …)."""
    token = await session.get(ApiToken, token_id)
    if token is not None and token.kind is not TokenKind.API:
        token = None  # a login's own token is ended by logging out
    if (token is None or token.user_id != ctx.principal.user_id) and not ctx.principal.allows(
        Role.ADMIN, None
    ):
        # another user's token, like one that does not exist: the same audited "no token"
        raise ctx.hidden(Role.ADMIN, f"no token {token_id}", what="revoking another user's token",
                         target_type="token", target_id=token_id,
                         target_name=token.name if token else None)  # fmt: skip
    if token is None:
        raise NotFound(f"no token {token_id}")
    if ctx.principal.credential is Credential.API and not await _made_with(
        session, token, ctx.principal.token_id
    ):
        # A token stored in a script may end itself and what it made, not its owner's others.
        ctx.require(
            Role.ADMIN,
            None,
            what="revoking a token not made with this one",
            target_type="token",
            target_id=token.id,
            target_name=token.name,
        )
    descendants = await _revoke_descendants(session, token.id)
    if token.revoked_at is None or descendants:
        token.revoked_at = token.revoked_at or utcnow()
        await session.flush()
        stage(
            session,
            ctx.event(
                EventType.TOKEN_REVOKED,
                target_type="token",
                target_id=token.id,
                target_name=token.name,
                details={"descendants": descendants} if descendants else {},
            ),
        )


async def _made_with(session: AsyncSession, token: ApiToken, maker_id: int | None) -> bool:
    """Whether `token` is the token `maker_id` or was made from it (through its parents)."""
    current: ApiToken | None = token
    while current is not None:
        if current.id == maker_id:
            return True
        current = await session.get(ApiToken, current.parent_id) if current.parent_id else None
    return False


async def _revoke_descendants(session: AsyncSession, token_id: int) -> list[int]:
    """Revoke what was made from the token, transitively; the ids newly revoked."""
    family: list[int] = []
    generation = [token_id]
    while generation:
        generation = list(
            await session.scalars(select(ApiToken.id).where(ApiToken.parent_id.in_(generation)))
        )
        family += generation
    if not family:
        return []
    alive = list(
        await session.scalars(
            select(ApiToken.id)
            .where(ApiToken.id.in_(family), ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.id)
        )
    )
    if alive:
        await session.execute(
            update(ApiToken).where(ApiToken.id.in_(alive)).values(revoked_at=utcnow())
        )
    return alive


async def end_access_token(session: AsyncSession, token_id: int) -> None:
    """Logout with a bearer token ends a short-lived access token (API tokens are revoked)."""
    await session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.kind == TokenKind.ACCESS)
        .values(revoked_at=utcnow())
    )
