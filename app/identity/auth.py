"""Who is calling: a bearer token (scripts) or a session cookie with CSRF check (dashboard)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Header, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from app.audit.models import EventType
from app.audit.service import Event
from app.context import RequestContext, request_id, ticket
from app.deps import SessionDep
from app.errors import Refused, Unauthenticated
from app.identity import service
from app.identity.models import ApiToken
from app.identity.principal import Principal
from app.identity.rejections import Presented, Rejection, clip
from app.uow import unit_of_work

SESSION_COOKIE = "rackhand_session"
CSRF_COOKIE = "rackhand_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


class CsrfFailed(Refused):
    kind = "Forbidden"


def source_ip(conn: HTTPConnection) -> str | None:
    """The client's address, as the audit and the login throttle both know it.

    The peer's address; behind a proxy listed in RACKHAND_TRUSTED_PROXIES, the one that
    proxy saw (uvicorn's ProxyHeadersMiddleware put it in the scope from X-Forwarded-For).
    """
    return conn.client.host[:64] if conn.client else None


def _bearer(conn: HTTPConnection) -> str | None:
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _rejected(conn: HTTPConnection, presented: Presented, token: str | None = None) -> Rejection:
    """A presented credential that does not work is a refusal, and refusals are audited
    (counted per source: app.identity.rejections)."""
    return Rejection.of(
        presented, source_ip(conn), token, conn.url.path, conn.headers.get("user-agent")
    )


async def _identify(
    conn: HTTPConnection, session: AsyncSession, token: str | None
) -> tuple[Principal, ApiToken | None]:
    """A bearer token, or the session cookie (with its CSRF token for a change)."""
    if token is not None:
        found = await service.principal_for_token(session, token)
        if found is None:
            raise Unauthenticated(
                "the bearer token is unknown, expired or revoked; get a new one",
                _rejected(conn, Presented.TOKEN, token),
            )
        return found
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie:
        found_session = await service.principal_for_session(session, cookie)
        if found_session is None:
            raise Unauthenticated(
                "the dashboard session has expired; log in again",
                _rejected(conn, Presented.SESSION),
            )
        principal, csrf = found_session
        if conn.scope["method"] not in SAFE_METHODS and conn.headers.get(CSRF_HEADER) != csrf:
            raise CsrfFailed(
                f"a change made with the session cookie needs the {CSRF_HEADER} header "
                "(the csrf_token from login)",
                Event(
                    EventType.ACCESS_DENIED,
                    principal.actor,
                    outcome="denied",
                    source_ip=source_ip(conn),
                    details={"why": "csrf", "path": clip(conn.url.path)},
                ),
            )
        return principal, None
    raise Unauthenticated("log in (POST /api/v1/auth/login) or send Authorization: Bearer rh_…")


async def current_principal(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2)]
) -> Principal:
    principal, stored = await _identify(request, session, token)
    if stored is not None:
        request.app.state.token_use.note(stored)  # written off this request's path
    return principal


async def check_credential(
    sessions: async_sessionmaker[AsyncSession], conn: HTTPConnection
) -> None:
    """Raise as `current_principal` would unless the request carries a working credential.

    In a short read of its own: the body limit asks it before reading a large body.
    """
    async with unit_of_work(sessions) as session:
        await _identify(conn, session, _bearer(conn))


async def request_context(
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    x_ticket: Annotated[str | None, Header(max_length=128, pattern=r"^[^\x00-\x1f]*$")] = None,
    x_reason: Annotated[str | None, Header(max_length=2000, pattern=r"^[^\x00]*$")] = None,
    x_request_id: Annotated[
        str | None,
        Header(description="kept if 1-64 of A-Z a-z 0-9 . _ : -, else replaced by one of ours"),
    ] = None,
) -> RequestContext:
    return RequestContext(
        principal=principal,
        source_ip=source_ip(request),
        request_id=request_id(x_request_id),
        ticket=x_ticket or None,
        reason=x_reason or None,
    )


Ctx = Annotated[RequestContext, Depends(request_context)]


async def connection_context(conn: HTTPConnection) -> RequestContext:
    """Who opens a WebSocket: a bearer token (CLI, scripts) or the dashboard's session cookie.

    Browsers send cookies with cross-site WebSocket handshakes and no CSRF header can be set
    on one, so a cookie only counts when the Origin is this server itself.
    """
    asked_ticket = ticket(conn.headers.get("x-ticket"))
    token = _bearer(conn)
    async with unit_of_work(conn.app.state.sessions) as session:
        if token is not None:
            found = await service.principal_for_token(session, token)
            if found is None:
                raise Unauthenticated(
                    "the bearer token is unknown, expired or revoked; get a new one",
                    _rejected(conn, Presented.TOKEN, token),
                )
            principal = found[0]
        elif cookie := conn.cookies.get(SESSION_COOKIE):
            found_session = await service.principal_for_session(session, cookie)
            if found_session is None:
                raise Unauthenticated(
                    "the dashboard session has expired; log in again",
                    _rejected(conn, Presented.SESSION),
                )
            principal = found_session[0]
            origin = conn.headers.get("origin")
            if origin is None or urlsplit(origin).netloc != conn.headers.get("host"):
                raise CsrfFailed(
                    "a console opened with the session cookie must come from this server's "
                    "own pages (Origin does not match)",
                    Event(
                        EventType.ACCESS_DENIED,
                        principal.actor,
                        outcome="denied",
                        source_ip=source_ip(conn),
                        details={
                            "why": "origin",
                            "origin": clip(origin),
                            "path": clip(conn.url.path),
                        },
                    ),
                )
        else:
            raise Unauthenticated("send Authorization: Bearer rh_… or log in to the dashboard")
    return RequestContext(
        principal=principal,
        source_ip=source_ip(conn),
        request_id=request_id(conn.headers.get("x-request-id")),
        ticket=asked_ticket,
    )
