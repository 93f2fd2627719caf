"""What every request carries into the services: who, from where, for which ticket and why."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from app.audit.models import EventType
from app.audit.service import SYSTEM, Event
from app.errors import Forbidden, Hidden, InvalidInput
from app.identity.models import Role
from app.identity.principal import Principal

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_TICKET = re.compile(r"[^\x00-\x1f]{1,128}")


def request_id(given: str | None) -> str:
    """The caller's `X-Request-ID` when it is a short token, else one of ours.

    It is metadata for tracing, so an over-long or odd one is replaced rather than refused: a
    refusal here would skip the audit and the login rate limit it exists to serve.
    """
    return given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def ticket(given: str | None) -> str | None:
    """An `X-Ticket` header, checked as the HTTP routes check it (WebSockets have no schema)."""
    if not given:
        return None
    if not _TICKET.fullmatch(given):
        raise InvalidInput("X-Ticket takes at most 128 characters and no control characters")
    return given


@dataclass(frozen=True)
class RequestContext:
    principal: Principal
    source_ip: str | None = None
    request_id: str | None = None
    ticket: str | None = None
    reason: str | None = None

    def event(self, type_: EventType, **fields: Any) -> Event:
        """An audit event by this caller, with the request's ticket and reason."""
        return Event(
            type=type_,
            actor=self.principal.actor,
            source_ip=self.source_ip,
            request_id=self.request_id,
            ticket=self.ticket,
            reason=self.reason,
            **fields,
        )

    def require(
        self,
        role: Role,
        site_id: int | None,
        *,
        what: str,
        target_type: str | None = None,
        target_id: int | None = None,
        target_name: str | None = None,
        site: str | None = None,
        missing: str | None = None,
    ) -> None:
        """Refuse (and audit the refusal) unless the caller holds `role` at the site.

        A caller who cannot see the site at all gets "not found", in the words of `missing`
        (what a look-up of nothing answers), so that other sites' objects stay invisible; one
        who sees it without the role gets "forbidden".
        """
        held = self.principal.role_at(site_id)
        if held is not None and held.rank >= role.rank:
            return
        if held is None and site_id is not None:
            raise self.hidden(
                role,
                missing or f"no such {target_type or 'object'}",
                what=what,
                target_type=target_type,
                target_id=target_id,
                target_name=target_name,
                site=site,
            )
        event = self.event(
            EventType.ACCESS_DENIED,
            outcome="denied",
            target_type=target_type,
            target_id=target_id,
            target_name=target_name,
            site=site,
            details={"needed": role.value, "held": held.value if held else None, "action": what},
        )
        where = f"at site {site!r}" if site else "on every site"
        raise Forbidden(f"{what} needs the {role} role {where}; you have {held or 'none'}", event)

    def hidden(
        self,
        role: Role,
        missing: str,
        *,
        what: str,
        target_type: str | None = None,
        target_id: int | None = None,
        target_name: str | None = None,
        site: str | None = None,
    ) -> Hidden:
        """The refusal of an object the caller may not see: audited, and answered in the very
        words of a missing one (`missing`), so that it tells nothing of what exists."""
        held = self.principal.role_at(None)
        return Hidden(
            missing,
            self.event(
                EventType.ACCESS_DENIED,
                outcome="denied",
                target_type=target_type,
                target_id=target_id,
                target_name=target_name,
                site=site,
                details={
                    "needed": role.value,
                    "held": held.value if held else None,
                    "action": what,
                    "hidden": True,
                },
            ),
        )

    def require_ticket(self, site_slug: str, enforced: bool, what: str) -> None:
        if enforced and not self.ticket:
            raise InvalidInput(
                f"site {site_slug!r} requires a ticket for {what}; send it as the X-Ticket header"
            )


def system_context(reason: str) -> RequestContext:
    """Rackhand acting on its own (first start, demo data): every right, audited as `system`."""
    principal = Principal(SYSTEM, user_id=0, grants=((Role.ADMIN, None),))
    return RequestContext(principal=principal, reason=reason)
