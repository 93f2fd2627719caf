"""`/audit`: the audit log as `GET /api/v1/audit` lists it to the viewer, filtered and paged.

The filters are the API's own (same names, same checks, same site scoping through
`app.audit.service.audit_filter`), so a page's URL is a bookmark and its "Export" links are the
API's export of exactly what the page lists. Verifying the chain is the browser's call to
`GET /api/v1/audit/verify` (admins of every site).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AwareDatetime, TypeAdapter, ValidationError
from starlette.responses import Response

from app.audit import service
from app.audit.export import AuditFormat
from app.audit.models import Outcome
from app.audit.schemas import AuditEventRead
from app.errors import InvalidInput
from app.identity.models import Role
from app.inventory import sites
from app.paging import MAX_CURSOR, decode_cursor, encode_cursor
from app.web.pages import ViewerDep, link, page_router

router = page_router()
PAGE_SIZE = 50
EXPORT = "/api/v1/audit/export"
Text = Annotated[str | None, Query(max_length=200)]
Short = Annotated[str | None, Query(max_length=64)]
_MOMENT = TypeAdapter(AwareDatetime)
FORMATS = {AuditFormat.CSV: "CSV", AuditFormat.JSONL: "JSON lines"}


@dataclass(frozen=True)
class Shown:
    """One event as the page lists it: the API's shape, and its details pretty-printed."""

    event: AuditEventRead
    details: str


def _moment(name: str, given: str | None) -> datetime | None:
    """A time filter read as the API reads it (ISO 8601 with its offset)."""
    if given is None:
        return None
    try:
        return _MOMENT.validate_python(given)
    except ValidationError as exc:
        message = exc.errors(include_url=False)[0]["msg"]
        raise InvalidInput(f"`{name}`: {message} (ISO 8601 with an offset, e.g. …T10:00Z)") from exc


def _outcome(given: str | None) -> Outcome | None:
    if given is None:
        return None
    try:
        return Outcome(given)
    except ValueError:
        known = ", ".join(outcome.value for outcome in Outcome)
        raise InvalidInput(f"`outcome`: one of {known}") from None


@router.get("/audit")
async def audit_page(
    viewer: ViewerDep,
    actor: Text = None,
    device: Text = None,
    site: Text = None,
    ticket: Text = None,
    type: Short = None,
    outcome: Annotated[str | None, Query(max_length=16)] = None,
    since: Short = None,
    until: Short = None,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> Response:
    asked = {
        "actor": actor,
        "device": device,
        "site": site,
        "ticket": ticket,
        "type": type,
        "outcome": outcome,
        "since": since,
        "until": until,
    }
    given = {name: value for name, value in asked.items() if value}  # an empty field: no filter
    shown: list[Shown] = []
    older: str | None = None
    problem: str | None = None
    try:
        flt = await service.audit_filter(
            viewer.session,
            viewer.ctx,
            actor=given.get("actor"),
            device=given.get("device"),
            site=given.get("site"),
            ticket=given.get("ticket"),
            type=given.get("type"),
            outcome=_outcome(given.get("outcome")),
            since=_moment("since", given.get("since")),
            until=_moment("until", given.get("until")),
        )
        before = decode_cursor(cursor, int)[0] if cursor else None
        events, last = await service.list_events(
            viewer.session, flt, limit=PAGE_SIZE, before=before
        )
    except InvalidInput as exc:
        problem = str(exc)
    else:
        for row in events:
            event = AuditEventRead.model_validate(row)
            shown.append(Shown(event, _pretty(event.details)))
        if last is not None:
            older = link("/audit", given | {"cursor": encode_cursor([last])})
    return viewer.render(
        "audit.html",
        asked={name: value or "" for name, value in asked.items()},
        events=shown,
        older=older,
        newest=link("/audit", given) if cursor else None,
        problem=problem,
        exports=None if problem else _exports(given),
        sites=await sites.list_sites(viewer.session, viewer.ctx),
        outcomes=list(Outcome),
        may_verify=viewer.can(Role.ADMIN),
    )


def _pretty(details: dict[str, Any]) -> str:
    """The details as indented JSON (already redacted when recorded: no secret is in them)."""
    return json.dumps(details, indent=2, sort_keys=True, ensure_ascii=False) if details else ""


def _exports(given: dict[str, str]) -> list[tuple[str, str]]:
    """The API's export of the same filters, in each format it offers (the session cookie
    goes with a plain link)."""
    return [(label, link(EXPORT, given | {"format": fmt.value})) for fmt, label in FORMATS.items()]
