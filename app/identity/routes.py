"""HTTP routes of identity: login, tokens, users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import ValidationError

from app.context import request_id
from app.deps import SessionDep, WriteSessionsDep, own_transactions
from app.errors import InvalidInput
from app.identity import service, tokens
from app.identity.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Ctx,
    source_ip,
)
from app.identity.logins import Attempt, LoginMethod, Logins
from app.identity.schemas import (
    LoginBody,
    LoginResult,
    TokenCreate,
    TokenCreated,
    TokenRead,
    TokenResult,
    UserCreate,
    UserRead,
    UserUpdate,
)
from app.inventory.refs import MAX_ID
from app.uow import unit_of_work


def _logins(request: Request) -> Logins:
    logins: Logins = request.app.state.logins
    return logins


router = APIRouter()
TokenId = Annotated[int, Path(ge=1, le=MAX_ID)]
LoginsDep = Annotated[Logins, Depends(_logins)]

_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginBody.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                    "required": ["username", "password"],
                }
            },
        },
    }
}


async def _credentials(request: Request) -> LoginBody:
    """JSON, or an OAuth2 password-flow form (what the docs' Authorize button sends)."""
    try:
        if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
            form = await request.form()
            return LoginBody.model_validate(
                {"username": form.get("username"), "password": form.get("password")}
            )
        return LoginBody.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidInput("give `username` and `password` as JSON or as a form") from exc


def _attempt(request: Request, body: LoginBody) -> Attempt:
    return Attempt(
        body.username, source_ip(request), request_id(request.headers.get("x-request-id"))
    )


# The login routes take no request session: the password is checked with no transaction
# open (app.identity.logins), then what the login makes is written in a short one.


@router.post("/auth/login", tags=["auth"], openapi_extra=_LOGIN_BODY)
async def login(request: Request, response: Response, logins: LoginsDep) -> LoginResult:
    """Dashboard login: sets an HttpOnly session cookie; send `csrf_token` as X-CSRF-Token."""
    body = await _credentials(request)
    verified = await logins.verify(
        _attempt(request, body), body.password.get_secret_value(), LoginMethod.PASSWORD
    )
    async with logins.signed_in(verified) as (session, user):
        raw, csrf = await service.open_web_session(session, user)
        grants = await service.describe(session, await service.user_grants(session, user.id))
    secure = request.url.scheme == "https"
    max_age = int(service.SESSION_TTL.total_seconds())
    response.set_cookie(
        SESSION_COOKIE,
        raw,
        max_age=max_age,
        httponly=True,
        secure=secure,
        samesite="strict",
        path="/",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=max_age,
        httponly=False,
        secure=secure,
        samesite="strict",
        path="/",
    )
    return LoginResult(username=user.username, csrf_token=csrf, grants=grants)


@router.post("/auth/token", tags=["auth"], openapi_extra=_LOGIN_BODY)
async def token(request: Request, logins: LoginsDep) -> TokenResult:
    """OAuth2 password flow: a bearer token valid for one hour."""
    body = await _credentials(request)
    verified = await logins.verify(
        _attempt(request, body), body.password.get_secret_value(), LoginMethod.TOKEN
    )
    async with logins.signed_in(verified) as (session, user):
        raw = await tokens.issue_access_token(session, user)
    return TokenResult(access_token=raw, expires_in=int(tokens.ACCESS_TOKEN_TTL.total_seconds()))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
async def logout(request: Request, response: Response, session: SessionDep, ctx: Ctx) -> None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await service.close_web_session(session, cookie)
    elif ctx.principal.token_id is not None:
        await tokens.end_access_token(session, ctx.principal.token_id)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


@router.get("/users", tags=["users"])
async def list_users(session: SessionDep, ctx: Ctx) -> list[UserRead]:
    return await service.list_users(session, ctx)


@router.post("/users", status_code=status.HTTP_201_CREATED, tags=["users"])
@own_transactions
async def create_user(
    ctx: Ctx, logins: LoginsDep, write_sessions: WriteSessionsDep, body: UserCreate
) -> UserRead:
    """The password is hashed before the write transaction, after the caller's rights."""
    service.may_create_user(ctx, body)
    password_hash = await logins.hash(body.password.get_secret_value())
    async with unit_of_work(write_sessions) as session:
        return await service.create_user(session, ctx, body, password_hash)


@router.get("/users/{user}", tags=["users"])
async def get_user(session: SessionDep, ctx: Ctx, user: str) -> UserRead:
    return await service.read_user(session, await service.get_user(session, ctx, user))


@router.patch("/users/{user}", tags=["users"])
@own_transactions
async def update_user(
    session: SessionDep,
    ctx: Ctx,
    logins: LoginsDep,
    write_sessions: WriteSessionsDep,
    user: str,
    body: UserUpdate,
) -> UserRead:
    """A new password needs an interactive login, and your current password for your own; it
    ends the user's other sessions (docs/security.md)."""
    found = await service.get_user(session, ctx, user)
    new_password = await logins.new_password(ctx, found, body)  # no write transaction open
    async with unit_of_work(write_sessions) as writer:
        return await service.update_user(writer, ctx, found.id, body, new_password)


@router.delete("/users/{user}", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
async def delete_user(session: SessionDep, ctx: Ctx, user: str) -> None:
    await service.delete_user(session, ctx, await service.get_user(session, ctx, user))


@router.get("/tokens", tags=["tokens"])
async def list_tokens(session: SessionDep, ctx: Ctx) -> list[TokenRead]:
    return await tokens.list_tokens(session, ctx)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, tags=["tokens"])
async def create_token(session: SessionDep, ctx: Ctx, body: TokenCreate) -> TokenCreated:
    """The token is in the answer once; only its hash is kept."""
    return await tokens.create_token(session, ctx, body)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["tokens"])
async def revoke_token(session: SessionDep, ctx: Ctx, token_id: TokenId) -> None:
    """Revokes every token made with this one too."""
    await tokens.revoke_token(session, ctx, token_id)
