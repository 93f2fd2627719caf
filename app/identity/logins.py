"""Checking a password: throttled before argon2 runs, and never inside a write transaction.

argon2 costs ~50 ms of CPU on purpose. Run inside the request's write transaction it held
SQLite's write lock (and a PostgreSQL connection) for that long: 40 concurrent logins stalled
every other write for 7 s. So a login reserves its guess with the throttle, reads the user
in a short read, lets go of the database, verifies in a thread, and only then writes the
outcome in a short transaction of its own.

And at most `ARGON2_AT_ONCE` hashes run at once: each takes 64 MiB and four threads, so
forty at once took 2.5 GiB and both cores from every other request.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import anyio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.models import AuditEvent, EventType
from app.audit.service import Actor, Event, stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import Forbidden, Refused
from app.identity import secrets, service
from app.identity.models import User
from app.identity.schemas import UserUpdate
from app.identity.service import NewPassword
from app.identity.throttle import History, LoginThrottle, Reservation
from app.uow import unit_of_work

ARGON2_AT_ONCE = min(4, os.cpu_count() or 1)


class LoginMethod(StrEnum):
    """How a password was given (`details.method` of `auth.login` and `auth.login_failed`)."""

    PASSWORD = "password"  # POST /auth/login: a dashboard session
    TOKEN = "token"  # POST /auth/token: a one-hour token
    CURRENT_PASSWORD = "current_password"  # PATCH /users/{you} with a new password


class LoginFailed(Refused):
    """Wrong username or password (never says which)."""

    kind = "Unauthenticated"


@dataclass(frozen=True)
class Attempt:
    username: str
    source_ip: str | None
    request_id: str | None


@dataclass(frozen=True)
class Verified:
    """A password that matched `password_hash`; the write checks the user still has it."""

    user_id: int
    password_hash: str
    attempt: Attempt
    method: LoginMethod


class Logins:
    """Password checks for logins and password changes, throttled (docs/security.md)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        write_sessions: async_sessionmaker[AsyncSession],
        throttle: LoginThrottle,
    ) -> None:
        self._sessions = sessions
        self._write_sessions = write_sessions
        self.throttle = throttle
        self._argon2 = anyio.CapacityLimiter(ARGON2_AT_ONCE)

    async def hash(self, password: str) -> str:
        """A new password's hash, made before the write transaction that stores it."""
        return await secrets.hash_password(password, self._argon2)

    async def verify(self, attempt: Attempt, password: str, method: LoginMethod) -> Verified:
        """The user whose password this is, or `LoginFailed` (audited) or `TooManyAttempts`."""
        reservation = await self._reserve(attempt)
        try:
            async with unit_of_work(self._sessions) as session:
                user = await session.scalar(select(User).where(User.username == attempt.username))
            stored = user.password_hash if user else None
            valid = await secrets.verify_password(stored, password, self._argon2)
        except BaseException:
            reservation.release()
            raise
        if user is None or not valid or user.disabled:
            reservation.failed()
            why = "disabled" if user and valid else "bad credentials"
            raise LoginFailed("wrong username or password", _failed(attempt, user, method, why))
        reservation.succeeded()
        return Verified(user.id, user.password_hash, attempt, method)

    @asynccontextmanager
    async def signed_in(self, verified: Verified) -> AsyncIterator[tuple[AsyncSession, User]]:
        """A short write transaction for what the login makes (session, token), audited.

        The user is read again: a password changed, or the user disabled or deleted, while
        argon2 ran makes the login fail as if the password were wrong.
        """
        async with unit_of_work(self._write_sessions) as session:
            user = await session.get(User, verified.user_id)
            if user is None or user.disabled or user.password_hash != verified.password_hash:
                event = _failed(verified.attempt, user, verified.method, "changed meanwhile")
                raise LoginFailed("wrong username or password", event)
            user.last_login_at = utcnow()
            stage(
                session,
                Event(
                    EventType.AUTH_LOGIN,
                    Actor("user", user.id, user.username),
                    target_type="user",
                    target_id=user.id,
                    target_name=user.username,
                    source_ip=verified.attempt.source_ip,
                    request_id=verified.attempt.request_id,
                    details={"method": verified.method.value},
                ),
            )
            yield session, user

    async def new_password(
        self, ctx: RequestContext, user: User, data: UserUpdate
    ) -> NewPassword | None:
        """A new password, checked (who may, and your current one for your own) and hashed
        before the write transaction that stores it (`service.update_user`)."""
        if data.password is None:
            return None
        service.may_update_user(ctx, user, data)
        if user.id == ctx.principal.user_id and data.current_password is not None:
            await self._check_current(ctx, user, data.current_password.get_secret_value())
        password_hash = await self.hash(data.password.get_secret_value())
        return NewPassword(password_hash, replaces=user.password_hash)

    async def _check_current(self, ctx: RequestContext, user: User, password: str) -> None:
        """Your own password changes only with the present one, checked like a login."""
        attempt = Attempt(user.username, ctx.source_ip, ctx.request_id)
        reservation = await self._reserve(attempt)
        try:
            valid = await secrets.verify_password(user.password_hash, password, self._argon2)
        except BaseException:
            reservation.release()
            raise
        if valid:
            reservation.succeeded()
            return
        reservation.failed()
        raise Forbidden(
            "current_password is wrong; the password was not changed",
            ctx.event(
                EventType.AUTH_LOGIN_FAILED,
                outcome="failure",
                target_type="user",
                target_id=user.id,
                target_name=user.username,
                details={"method": LoginMethod.CURRENT_PASSWORD.value, "why": "bad credentials"},
            ),
        )

    async def _reserve(self, attempt: Attempt) -> Reservation:
        if not self.throttle.knows(attempt.username, attempt.source_ip):
            history = await self._history(attempt)
            self.throttle.learn(attempt.username, attempt.source_ip, history)
        return await self.throttle.reserve(attempt.username, attempt.source_ip)

    async def _history(self, attempt: Attempt) -> History:
        """This user at this address, from the audit log: after a restart, or on a replica
        that has not seen them, failures still count and a known address is still known."""
        rules = self.throttle.rules
        now = utcnow()
        pair = select(func.max(AuditEvent.at)).where(
            AuditEvent.target_type == "user",
            AuditEvent.target_name == attempt.username,
            AuditEvent.source_ip == attempt.source_ip,
        )
        async with unit_of_work(self._sessions) as session:
            success = await session.scalar(
                pair.where(
                    AuditEvent.type == EventType.AUTH_LOGIN,
                    AuditEvent.at >= now - timedelta(seconds=rules.familiar_for),
                )
            )
            since = now - timedelta(seconds=rules.forget_after)
            if success is not None:
                since = max(since, success)
            failures = await session.execute(
                pair.add_columns(func.count()).where(
                    AuditEvent.type == EventType.AUTH_LOGIN_FAILED, AuditEvent.at > since
                )
            )
            last_failure, count = failures.one()
        return History(
            failures=count,
            last_failure_age=(now - last_failure).total_seconds() if last_failure else None,
            last_success_age=(now - success).total_seconds() if success else None,
        )


def _failed(attempt: Attempt, user: User | None, method: LoginMethod, why: str) -> Event:
    return Event(
        EventType.AUTH_LOGIN_FAILED,
        Actor("anonymous", None, attempt.username),
        outcome="failure",
        target_type="user",
        target_id=user.id if user else None,
        target_name=attempt.username,
        source_ip=attempt.source_ip,
        request_id=attempt.request_id,
        details={"method": method.value, "why": why},
    )
