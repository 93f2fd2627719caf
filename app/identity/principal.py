"""The caller of a request, with the roles it holds per site."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from app.audit.service import Actor
from app.identity.models import Role

GrantPair = tuple[Role, int | None]  # (role, site id or None for every site)


def narrow(user: Iterable[GrantPair], token: Iterable[GrantPair]) -> tuple[GrantPair, ...]:
    """What a token may do: the overlap of its own grants with its user's."""
    result = []
    for user_role, user_site in user:
        for token_role, token_site in token:
            if user_site is not None and token_site is not None and user_site != token_site:
                continue
            role = user_role if user_role.rank <= token_role.rank else token_role
            result.append((role, user_site if user_site is not None else token_site))
    return tuple(result)


class Credential(StrEnum):
    """What the caller presented."""

    SESSION = "session"  # the dashboard's cookie, from a password login
    ACCESS = "access"  # a one-hour token from the password flow
    API = "api"  # a named API token (POST /tokens)
    SYSTEM = "system"  # Rackhand itself


class Ended(StrEnum):
    """Why a caller's live stream (console, job events) was closed under it."""

    TOKEN_REVOKED = "token revoked"
    TOKEN_EXPIRED = "token expired"
    SESSION_ENDED = "session ended"
    USER_DISABLED = "user disabled"
    ACCESS_WITHDRAWN = "access withdrawn"  # still logged in, no longer allowed in


@dataclass(frozen=True)
class Principal:
    actor: Actor
    user_id: int
    grants: tuple[GrantPair, ...]
    token_id: int | None = None
    credential: Credential = Credential.SYSTEM
    session_id: int | None = None

    @property
    def interactive(self) -> bool:
        """A person who typed the password lately; a named API token never is one."""
        return self.credential in (Credential.SESSION, Credential.ACCESS)

    def role_at(self, site_id: int | None) -> Role | None:
        """The strongest role covering `site_id` (None: a site-less thing, needs a global grant)."""
        roles = [
            role
            for role, site in self.grants
            if site is None or (site_id is not None and site == site_id)
        ]
        return max(roles, key=lambda role: role.rank, default=None)

    def allows(self, role: Role, site_id: int | None) -> bool:
        held = self.role_at(site_id)
        return held is not None and held.rank >= role.rank

    def visible_site_ids(self) -> set[int] | None:
        """None when every site is visible."""
        if any(site is None for _, site in self.grants):
            return None
        return {site for _, site in self.grants if site is not None}
