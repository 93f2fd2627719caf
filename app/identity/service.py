"""Users, grants, API tokens, dashboard sessions, logins and their rate limit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent
from app.audit.service import Actor, Event, diff, stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import (
    AlreadyExists,
    FieldError,
    Forbidden,
    InUse,
    NotFound,
    Refused,
    TooManyAttempts,
)
from app.identity import secrets
from app.identity.models import ApiToken, Grant, Role, User, WebSession
from app.identity.principal import GrantPair, Principal, narrow
from app.identity.schemas import (
    GrantRead,
    GrantSpec,
    TokenCreate,
    TokenCreated,
    TokenRead,
    UserCreate,
    UserRead,
    UserUpdate,
)
from app.inventory.models import Site
from app.inventory.refs import as_id

ACCESS_TOKEN_TTL = timedelta(hours=1)
SESSION_TTL = timedelta(hours=12)
LOGIN_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
LAST_USED_GRANULARITY = timedelta(minutes=1)


class LoginFailed(Refused):
    """Wrong username or password (never says which)."""

    kind = "Unauthenticated"


# Grants ---------------------------------------------------------------------------------------


async def _pairs(session: AsyncSession, owner: ColumnElement[bool]) -> list[GrantPair]:
    rows = await session.execute(select(Grant.role, Grant.site_id).where(owner))
    return [(role, site_id) for role, site_id in rows]


async def user_grants(session: AsyncSession, user_id: int) -> list[GrantPair]:
    return await _pairs(session, Grant.user_id == user_id)


async def resolve_specs(session: AsyncSession, specs: Sequence[GrantSpec]) -> list[GrantPair]:
    slugs = {slug for spec in specs for slug in spec.sites or []}
    found = dict(
        (await session.execute(select(Site.slug, Site.id).where(Site.slug.in_(slugs)))).all()
    )
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


async def _replace_grants(
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


def _within(wanted: list[GrantPair], holder: Principal) -> bool:
    return all(holder.allows(role, site) for role, site in wanted)


# Authentication -------------------------------------------------------------------------------


async def principal_for_token(session: AsyncSession, raw: str) -> tuple[Principal, ApiToken] | None:
    token = await session.scalar(select(ApiToken).where(ApiToken.token_hash == secrets.digest(raw)))
    now = utcnow()
    if (
        token is None
        or token.revoked_at is not None
        or (token.expires_at is not None and token.expires_at <= now)
    ):
        return None
    user = await session.get(User, token.user_id)
    if user is None or user.disabled:
        return None
    grants = await user_grants(session, user.id)
    if token.kind == "api":
        grants = list(narrow(grants, await _pairs(session, Grant.token_id == token.id)))
    actor = Actor(
        "token" if token.kind == "api" else "user",
        token.id if token.kind == "api" else user.id,
        f"{user.username}/{token.name}" if token.kind == "api" else user.username,
    )
    return Principal(actor, user.id, tuple(grants), token_id=token.id), token


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
    if found is None or found.expires_at <= utcnow():
        return None
    user = await session.get(User, found.user_id)
    if user is None or user.disabled:
        return None
    grants = await user_grants(session, user.id)
    principal = Principal(Actor("user", user.id, user.username), user.id, tuple(grants))
    return principal, found.csrf_token


@dataclass(frozen=True)
class Attempt:
    username: str
    source_ip: str | None
    request_id: str | None


async def _check_rate(session: AsyncSession, attempt: Attempt) -> None:
    since = utcnow() - LOGIN_WINDOW
    failures = select(func.count()).where(
        AuditEvent.type == "auth.login_failed", AuditEvent.at >= since
    )
    by_user = await session.scalar(failures.where(AuditEvent.target_name == attempt.username)) or 0
    by_address = 0
    if attempt.source_ip:
        by_address = (
            await session.scalar(failures.where(AuditEvent.source_ip == attempt.source_ip)) or 0
        )
    if by_user >= MAX_FAILURES_PER_USER or by_address >= MAX_FAILURES_PER_ADDRESS:
        raise TooManyAttempts(
            f"too many failed logins; try again in {LOGIN_WINDOW.seconds // 60} minutes",
            retry_after=int(LOGIN_WINDOW.total_seconds()),
        )


async def login(session: AsyncSession, attempt: Attempt, password: str, method: str) -> User:
    """Check the password (rate-limited per user and per address); audit success or failure."""
    await _check_rate(session, attempt)
    user = await session.scalar(select(User).where(User.username == attempt.username))
    valid = await secrets.verify_password(user.password_hash if user else None, password)
    if user is None or not valid or user.disabled:
        event = Event(
            "auth.login_failed",
            Actor("anonymous", None, attempt.username),
            outcome="failure",
            target_type="user",
            target_id=user.id if user else None,
            target_name=attempt.username,
            source_ip=attempt.source_ip,
            request_id=attempt.request_id,
            details={"method": method, "why": "disabled" if user and valid else "bad credentials"},
        )
        raise LoginFailed("wrong username or password", event)
    user.last_login_at = utcnow()
    stage(
        session,
        Event(
            "auth.login",
            Actor("user", user.id, user.username),
            target_type="user",
            target_id=user.id,
            target_name=user.username,
            source_ip=attempt.source_ip,
            request_id=attempt.request_id,
            details={"method": method},
        ),
    )
    return user


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


async def issue_access_token(session: AsyncSession, user: User) -> str:
    raw = secrets.new_token()
    session.add(
        ApiToken(
            user_id=user.id,
            name="access",
            kind="access",
            prefix=raw[:10],
            token_hash=secrets.digest(raw),
            expires_at=utcnow() + ACCESS_TOKEN_TTL,
        )
    )
    await session.flush()
    return raw


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
    user_id = as_id(ref)
    user = await session.scalar(
        select(User).where(User.id == user_id if user_id else User.username == ref)
    )
    if user is None or (
        user.id != ctx.principal.user_id and not ctx.principal.allows(Role.ADMIN, None)
    ):
        if user is not None:
            ctx.require(
                Role.ADMIN, None, what="reading another user", target_type="user", target_name=ref
            )
        raise NotFound(f"no user {ref!r}")
    return user


async def read_user(session: AsyncSession, user: User) -> UserRead:
    return await _read_user(session, user)


async def create_user(session: AsyncSession, ctx: RequestContext, data: UserCreate) -> UserRead:
    ctx.require(
        Role.ADMIN, None, what="creating users", target_type="user", target_name=data.username
    )
    if await session.scalar(select(User.id).where(User.username == data.username)) is not None:
        raise AlreadyExists(f"a user named {data.username!r} already exists")
    user = User(
        username=data.username,
        display_name=data.display_name,
        password_hash=await secrets.hash_password(data.password.get_secret_value()),
    )
    session.add(user)
    await session.flush()
    await _replace_grants(session, await resolve_specs(session, data.grants), user_id=user.id)
    read = await _read_user(session, user)
    stage(
        session,
        ctx.event(
            "user.created",
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


async def update_user(
    session: AsyncSession, ctx: RequestContext, user: User, data: UserUpdate
) -> UserRead:
    own = user.id == ctx.principal.user_id
    changes = data.model_dump(exclude_unset=True)
    if not (own and set(changes) <= {"password", "display_name"}):
        ctx.require(
            Role.ADMIN,
            None,
            what="changing users",
            target_type="user",
            target_id=user.id,
            target_name=user.username,
        )
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
            await _replace_grants(session, pairs, user_id=user.id)
    if data.password is not None:
        user.password_hash = await secrets.hash_password(data.password.get_secret_value())
    if data.display_name is not None:
        user.display_name = data.display_name
    if data.disabled is not None:
        user.disabled = data.disabled
    await session.flush()
    after = await _read_user(session, user)
    details: dict[str, Any] = diff(before.model_dump(mode="json"), after.model_dump(mode="json"))
    if data.password is not None:
        details["password_changed"] = True
    stage(
        session,
        ctx.event(
            "user.updated",
            target_type="user",
            target_id=user.id,
            target_name=user.username,
            details=details,
        ),
    )
    return after


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
            "user.deleted",
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
    await _replace_grants(session, [(Role.ADMIN, None)], user_id=user.id)
    stage(
        session,
        Event(
            "user.created",
            Actor("system", None, "rackhand"),
            target_type="user",
            target_id=user.id,
            target_name="admin",
            details={"bootstrap": True},
        ),
    )
    return generated


# Tokens ---------------------------------------------------------------------------------------


async def _read_token(session: AsyncSession, token: ApiToken, owner: str) -> TokenRead:
    pairs = await _pairs(session, Grant.token_id == token.id)
    return TokenRead(
        id=token.id,
        name=token.name,
        kind=token.kind,
        prefix=token.prefix,
        user=owner,
        grants=await describe(session, pairs),
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


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
        pairs = await resolve_specs(session, [GrantSpec(role=data.role, sites=data.sites)])
    if not pairs or not _within(pairs, principal):
        raise Forbidden(
            f"a token cannot hold more than you: you lack {data.role} on some of those sites",
            ctx.event(
                "access.denied",
                outcome="denied",
                details={
                    "action": "creating a token",
                    "role": data.role.value,
                    "sites": data.sites,
                },
            ),
        )
    raw = secrets.new_token()
    expires = utcnow() + timedelta(days=data.expires_in_days) if data.expires_in_days else None
    token = ApiToken(
        user_id=principal.user_id,
        name=data.name,
        kind="api",
        prefix=raw[:10],
        token_hash=secrets.digest(raw),
        expires_at=expires,
    )
    session.add(token)
    await session.flush()
    await _replace_grants(session, pairs, token_id=token.id)
    owner = await session.scalar(select(User.username).where(User.id == principal.user_id)) or "?"
    read = await _read_token(session, token, owner)
    stage(
        session,
        ctx.event(
            "token.created",
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
        .where(ApiToken.kind == "api")
    )
    if not ctx.principal.allows(Role.ADMIN, None):
        query = query.where(ApiToken.user_id == ctx.principal.user_id)
    rows = await session.execute(query.order_by(ApiToken.id))
    return [await _read_token(session, token, owner) for token, owner in rows]


async def revoke_token(session: AsyncSession, ctx: RequestContext, token_id: int) -> None:
    token = await session.get(ApiToken, token_id)
    if token is None or token.kind != "api":
        raise NotFound(f"no token {token_id}")
    if token.user_id != ctx.principal.user_id:
        ctx.require(
            Role.ADMIN,
            None,
            what="revoking another user's token",
            target_type="token",
            target_id=token.id,
            target_name=token.name,
        )
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        await session.flush()
        stage(
            session,
            ctx.event(
                "token.revoked", target_type="token", target_id=token.id, target_name=token.name
            ),
        )


async def end_access_token(session: AsyncSession, token_id: int) -> None:
    """Logout with a bearer token ends a short-lived access token (API tokens are revoked)."""
    await session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.kind == "access")
        .values(revoked_at=utcnow())
    )
