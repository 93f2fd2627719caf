"""Users, grants, dashboard sessions, and who a credential is.

API tokens (made, listed, revoked) live in `app.identity.tokens`; password checks and their
throttle in `app.identity.logins` and `app.identity.throttle`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import EventType
from app.audit.service import Actor, Event, diff, stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import AlreadyExists, FieldError, Forbidden, InUse, NotFound
from app.identity import secrets
from app.identity.models import ApiToken, Grant, Role, TokenKind, User, WebSession
from app.identity.principal import Credential, Ended, GrantPair, Principal, narrow
from app.identity.schemas import (
    GrantRead,
    GrantSpec,
    UserCreate,
    UserRead,
    UserUpdate,
)
from app.inventory.models import Site
from app.inventory.refs import as_id

SESSION_TTL = timedelta(hours=12)
LAST_USED_GRANULARITY = timedelta(minutes=1)


# Grants ---------------------------------------------------------------------------------------


async def _pairs(session: AsyncSession, owner: ColumnElement[bool]) -> list[GrantPair]:
    rows = await session.execute(select(Grant.role, Grant.site_id).where(owner))
    return [(role, site_id) for role, site_id in rows]


async def user_grants(session: AsyncSession, user_id: int) -> list[GrantPair]:
    return await _pairs(session, Grant.user_id == user_id)


async def token_grants(session: AsyncSession, token_id: int) -> list[GrantPair]:
    return await _pairs(session, Grant.token_id == token_id)


async def resolve_specs(
    session: AsyncSession, specs: Sequence[GrantSpec], visible: set[int] | None = None
) -> list[GrantPair]:
    """(role, site id) pairs; a site outside `visible` (None: every site) reads as unknown."""
    slugs = {slug for spec in specs for slug in spec.sites or []}
    query = select(Site.slug, Site.id).where(Site.slug.in_(slugs))
    if visible is not None:
        query = query.where(Site.id.in_(sorted(visible)))
    found = dict((await session.execute(query)).all())
    missing = sorted(slugs - set(found))
    if missing:
        raise FieldError("sites", f"no site {missing[0]!r}")
    pairs: list[GrantPair] = []
    for spec in specs:
        pairs += (
            [(spec.role, None)]
            if spec.sites is None
            else [(spec.role, found[s]) for s in spec.sites]
        )
    return pairs


async def describe(session: AsyncSession, pairs: Iterable[GrantPair]) -> list[GrantRead]:
    """Group (role, site) pairs as the API shows them: one entry per role."""
    pairs = list(pairs)
    ids = {site for _, site in pairs if site is not None}
    slugs = (
        dict((await session.execute(select(Site.id, Site.slug).where(Site.id.in_(ids)))).all())
        if ids
        else {}
    )
    everywhere = {role for role, site in pairs if site is None}
    by_role: dict[Role, set[str]] = {}
    for role, site in pairs:
        by_role.setdefault(role, set())
        if site is not None:
            by_role[role].add(slugs[site])
    return [
        GrantRead(role=role, sites=None if role in everywhere else sorted(by_role[role]))
        for role in sorted(by_role, key=lambda role: -role.rank)
    ]


async def replace_grants(
    session: AsyncSession,
    pairs: list[GrantPair],
    *,
    user_id: int | None = None,
    token_id: int | None = None,
) -> None:
    owner = Grant.user_id == user_id if user_id is not None else Grant.token_id == token_id
    await session.execute(delete(Grant).where(owner))
    session.add_all(
        Grant(user_id=user_id, token_id=token_id, role=role, site_id=site) for role, site in pairs
    )
    await session.flush()


# Authentication -------------------------------------------------------------------------------


async def principal_for_token(session: AsyncSession, raw: str) -> tuple[Principal, ApiToken] | None:
    token = await session.scalar(select(ApiToken).where(ApiToken.token_hash == secrets.digest(raw)))
    if token is None:
        return None
    found = await _token_principal(session, token)
    return (found, token) if isinstance(found, Principal) else None


async def _token_principal(session: AsyncSession, token: ApiToken) -> Principal | Ended:
    if token.revoked_at is not None:
        return Ended.TOKEN_REVOKED
    if token.expires_at <= utcnow():
        return Ended.TOKEN_EXPIRED
    user = await session.get(User, token.user_id)
    if user is None or user.disabled:
        return Ended.USER_DISABLED
    grants = await user_grants(session, user.id)
    if token.kind is TokenKind.API:
        grants = list(narrow(grants, await token_grants(session, token.id)))
        actor = Actor("token", token.id, f"{user.username}/{token.name}")
        credential = Credential.API
    else:
        actor, credential = Actor("user", user.id, user.username), Credential.ACCESS
    return Principal(actor, user.id, tuple(grants), token_id=token.id, credential=credential)


def needs_last_used(token: ApiToken) -> bool:
    return token.last_used_at is None or utcnow() - token.last_used_at > LAST_USED_GRANULARITY


async def mark_used(session: AsyncSession, token_id: int) -> None:
    await session.execute(
        update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow())
    )


async def principal_for_session(session: AsyncSession, raw: str) -> tuple[Principal, str] | None:
    found = await session.scalar(
        select(WebSession).where(WebSession.session_hash == secrets.digest(raw))
    )
    if found is None:
        return None
    principal = await _session_principal(session, found)
    return (principal, found.csrf_token) if isinstance(principal, Principal) else None


async def _session_principal(session: AsyncSession, found: WebSession) -> Principal | Ended:
    if found.expires_at <= utcnow():
        return Ended.SESSION_ENDED
    user = await session.get(User, found.user_id)
    if user is None or user.disabled:
        return Ended.USER_DISABLED
    grants = await user_grants(session, user.id)
    actor = Actor("user", user.id, user.username)
    return Principal(
        actor, user.id, tuple(grants), credential=Credential.SESSION, session_id=found.id
    )


async def refresh(session: AsyncSession, principal: Principal) -> Principal | Ended:
    """The caller as the database has it now, or why its credential no longer works.

    Live streams (consoles, job events) call it every few seconds: a credential checked once
    at the handshake would otherwise outlive its revocation for as long as the stream lasts.
    """
    if principal.credential is Credential.SESSION and principal.session_id is not None:
        found = await session.get(WebSession, principal.session_id, populate_existing=True)
        return Ended.SESSION_ENDED if found is None else await _session_principal(session, found)
    if principal.token_id is not None:
        token = await session.get(ApiToken, principal.token_id, populate_existing=True)
        return Ended.TOKEN_REVOKED if token is None else await _token_principal(session, token)
    return principal  # Rackhand itself


async def open_web_session(session: AsyncSession, user: User) -> tuple[str, str]:
    """(cookie value, CSRF token); expired sessions of everyone are swept on the way."""
    await session.execute(delete(WebSession).where(WebSession.expires_at <= utcnow()))
    raw, csrf = secrets.new_random(), secrets.new_random()
    session.add(
        WebSession(
            user_id=user.id,
            session_hash=secrets.digest(raw),
            csrf_token=csrf,
            expires_at=utcnow() + SESSION_TTL,
        )
    )
    await session.flush()
    return raw, csrf


async def close_web_session(session: AsyncSession, raw: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.session_hash == secrets.digest(raw)))


# Users ----------------------------------------------------------------------------------------


async def _read_user(session: AsyncSession, user: User) -> UserRead:
    return UserRead(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        disabled=user.disabled,
        grants=await describe(session, await user_grants(session, user.id)),
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


async def list_users(session: AsyncSession, ctx: RequestContext) -> list[UserRead]:
    ctx.require(Role.ADMIN, None, what="listing users")
    return [
        await _read_user(session, user)
        for user in await session.scalars(select(User).order_by(User.username))
    ]


async def get_user(session: AsyncSession, ctx: RequestContext, ref: str) -> User:
    """The caller itself, or for an admin of all sites anyone; to anybody else another user,
    existing or not, gets the same audited "no user" (usernames are not enumerable)."""
    user_id = as_id(ref)
    user = await session.scalar(
        select(User).where(User.id == user_id if user_id else User.username == ref)
    )
    if user is not None and user.id == ctx.principal.user_id:
        return user
    if not ctx.principal.allows(Role.ADMIN, None):
        raise ctx.hidden(Role.ADMIN, f"no user {ref!r}", what="reading another user",
                         target_type="user", target_id=user.id if user else None,
                         target_name=ref)  # fmt: skip
    if user is None:
        raise NotFound(f"no user {ref!r}")
    return user


async def read_user(session: AsyncSession, user: User) -> UserRead:
    return await _read_user(session, user)


def may_create_user(ctx: RequestContext, data: UserCreate) -> None:
    """Checked before the password is hashed: argon2 runs for an admin only."""
    ctx.require(
        Role.ADMIN, None, what="creating users", target_type="user", target_name=data.username
    )


async def create_user(
    session: AsyncSession, ctx: RequestContext, data: UserCreate, password_hash: str
) -> UserRead:
    """`password_hash` is made before the write transaction (`Logins.hash`)."""
    may_create_user(ctx, data)
    if await session.scalar(select(User.id).where(User.username == data.username)) is not None:
        raise AlreadyExists(f"a user named {data.username!r} already exists")
    user = User(username=data.username, display_name=data.display_name, password_hash=password_hash)
    session.add(user)
    await session.flush()
    await replace_grants(session, await resolve_specs(session, data.grants), user_id=user.id)
    read = await _read_user(session, user)
    stage(
        session,
        ctx.event(
            EventType.USER_CREATED,
            target_type="user",
            target_id=user.id,
            target_name=user.username,
            details={"after": read.model_dump(mode="json")},
        ),
    )
    return read


async def _admins_left(session: AsyncSession, without: int) -> int:
    return (
        await session.scalar(
            select(func.count(func.distinct(Grant.user_id)))
            .join(User, User.id == Grant.user_id)
            .where(
                Grant.role == Role.ADMIN,
                Grant.site_id.is_(None),
                Grant.user_id != without,
                User.disabled.is_(False),
            )
        )
        or 0
    )


def may_update_user(ctx: RequestContext, user: User, data: UserUpdate) -> None:
    """Who may make this change; checked before any password is verified or hashed."""
    own = user.id == ctx.principal.user_id
    changes = data.model_dump(exclude_unset=True)
    if not (own and set(changes) <= {"password", "current_password", "display_name"}):
        ctx.require(
            Role.ADMIN,
            None,
            what="changing users",
            target_type="user",
            target_id=user.id,
            target_name=user.username,
        )
    if data.current_password is not None and data.password is None:
        raise FieldError("current_password", "it goes with `password`, to change your own")
    if data.password is not None:
        _may_set_password(ctx, user, data)


@dataclass(frozen=True)
class NewPassword:
    """A password checked and hashed before the write (`Logins.new_password`): `replaces`
    is the hash it was checked against, so a change made meanwhile is not overwritten."""

    password_hash: str
    replaces: str


async def update_user(
    session: AsyncSession,
    ctx: RequestContext,
    user_id: int,
    data: UserUpdate,
    new_password: NewPassword | None = None,
) -> UserRead:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    may_update_user(ctx, user, data)
    if (data.password is None) != (new_password is None):
        raise RuntimeError("a new password is checked and hashed before the write")
    if new_password is not None and user.password_hash != new_password.replaces:
        raise InUse("the password was changed meanwhile; send the change again")
    before = await _read_user(session, user)
    if data.grants is not None or data.disabled:
        pairs = (
            await resolve_specs(session, data.grants)
            if data.grants is not None
            else await user_grants(session, user.id)
        )
        keeps_admin = (Role.ADMIN, None) in pairs and not data.disabled
        if not keeps_admin and await _admins_left(session, user.id) == 0:
            raise InUse("this is the last enabled admin of every site; make another one first")
        if data.grants is not None:
            await replace_grants(session, pairs, user_id=user.id)
    details: dict[str, Any] = {}
    if new_password is not None:
        user.password_hash = new_password.password_hash
        details["password_changed"] = True
        details["logins_ended"] = await _end_other_logins(session, user.id, ctx.principal)
    if data.display_name is not None:
        user.display_name = data.display_name
    if data.disabled is not None:
        user.disabled = data.disabled
    await session.flush()
    after = await _read_user(session, user)
    details = diff(before.model_dump(mode="json"), after.model_dump(mode="json")) | details
    stage(
        session,
        ctx.event(
            EventType.USER_UPDATED,
            target_type="user",
            target_id=user.id,
            target_name=user.username,
            details=details,
        ),
    )
    return after


def _may_set_password(ctx: RequestContext, user: User, data: UserUpdate) -> None:
    """Only a person who just typed a password sets one (docs/security.md).

    A named API token may be narrowed to a viewer at one site, yet it acts as its user: were
    it allowed to set its user's password, it could log in as the whole user. Your own
    password also needs the current one, checked like a login (audited, throttled:
    `Logins.new_password`), so a session left open is not enough to take the account over.
    An admin of all sites resets someone else's without it, from their own interactive login.
    """
    principal = ctx.principal
    if not principal.interactive:
        raise Forbidden(
            "passwords are changed only from an interactive login (the dashboard session, or "
            "a token from POST /auth/token), never with an API token",
            ctx.event(
                EventType.ACCESS_DENIED,
                outcome="denied",
                target_type="user",
                target_id=user.id,
                target_name=user.username,
                details={"action": "changing a password", "credential": principal.credential.value},
            ),
        )
    if user.id == principal.user_id and data.current_password is None:
        raise FieldError("current_password", "changing your own password needs your current one")


async def _end_other_logins(session: AsyncSession, user_id: int, caller: Principal) -> int:
    """A new password ends the user's dashboard sessions and one-hour tokens, except the
    caller's own; named API tokens stay (docs/security.md says why)."""
    sessions = select(WebSession.id).where(WebSession.user_id == user_id)
    tokens = select(ApiToken.id).where(
        ApiToken.user_id == user_id,
        ApiToken.kind == TokenKind.ACCESS,
        ApiToken.revoked_at.is_(None),
    )
    if caller.user_id == user_id and caller.session_id is not None:
        sessions = sessions.where(WebSession.id != caller.session_id)
    if caller.user_id == user_id and caller.token_id is not None:
        tokens = tokens.where(ApiToken.id != caller.token_id)
    ended_sessions = list(await session.scalars(sessions))
    ended_tokens = list(await session.scalars(tokens))
    if ended_sessions:
        await session.execute(delete(WebSession).where(WebSession.id.in_(ended_sessions)))
    if ended_tokens:
        await session.execute(
            update(ApiToken).where(ApiToken.id.in_(ended_tokens)).values(revoked_at=utcnow())
        )
    return len(ended_sessions) + len(ended_tokens)


async def delete_user(session: AsyncSession, ctx: RequestContext, user: User) -> None:
    ctx.require(
        Role.ADMIN,
        None,
        what="deleting users",
        target_type="user",
        target_id=user.id,
        target_name=user.username,
    )
    if user.id == ctx.principal.user_id:
        raise InUse("you cannot delete yourself")
    if await _admins_left(session, user.id) == 0:
        raise InUse("this is the last enabled admin of every site; make another one first")
    before = await _read_user(session, user)
    await session.delete(user)
    await session.flush()
    stage(
        session,
        ctx.event(
            EventType.USER_DELETED,
            target_type="user",
            target_id=before.id,
            target_name=before.username,
            details={"before": before.model_dump(mode="json")},
        ),
    )


async def bootstrap_admin(session: AsyncSession, password: str | None) -> str | None:
    """First start: create `admin` (all sites); returns the password when it was generated."""
    if await session.scalar(select(func.count()).select_from(User)):
        return None
    generated = None if password else secrets.generate_password()
    user = User(
        username="admin",
        display_name="Administrator",
        password_hash=await secrets.hash_password(password or generated or ""),
    )
    session.add(user)
    await session.flush()
    await replace_grants(session, [(Role.ADMIN, None)], user_id=user.id)
    stage(
        session,
        Event(
            EventType.USER_CREATED,
            Actor("system", None, "rackhand"),
            target_type="user",
            target_id=user.id,
            target_name="admin",
            details={"bootstrap": True},
        ),
    )
    return generated
