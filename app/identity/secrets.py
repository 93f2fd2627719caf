"""Password hashing (argon2id) and the random strings behind tokens and sessions."""

from __future__ import annotations

import hashlib
import secrets

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

TOKEN_PREFIX = "rh_"
_hasher = PasswordHasher()
# Verified when the user does not exist, so a failed login costs the same either way.
_DUMMY = _hasher.hash("not-a-real-password")


async def hash_password(password: str, limiter: anyio.CapacityLimiter | None = None) -> str:
    """argon2 takes ~50 ms of CPU and 64 MiB on purpose: off the event loop, and at most
    `limiter`'s number at once (`Logins` holds the one for requests)."""
    return await anyio.to_thread.run_sync(_hasher.hash, password, limiter=limiter)


async def verify_password(
    password_hash: str | None, password: str, limiter: anyio.CapacityLimiter | None = None
) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(check, limiter=limiter)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_random() -> str:
    return secrets.token_urlsafe(32)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(18)
