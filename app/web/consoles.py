"""`/consoles`, `/consoles/{id}` and `/recordings/{id}`: console sessions, a live console in
the browser (xterm.js on the API's own WebSocket), and the replay of a closed one.

The pages read the sessions through `app.consoles.service` with the viewer's context (a session
at a site the viewer cannot see is a 404, as in the API). Everything the console page does goes
through the API: keys, the write lock, break and power as frames of the stream
(`WS /api/v1/consoles/{id}/stream`, which checks the operator role itself), closing and the
recording through REST. The page only decides which buttons to show.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from starlette.responses import Response

from agents.protocol import PowerAction
from app.consoles import service
from app.consoles.broker import broker_of
from app.consoles.models import LIVE, ConsoleMode, ConsoleStatus
from app.identity.models import Role
from app.inventory import sites
from app.web.pages import CSP, ViewerDep, page_router

router = page_router()

RECENT = 50  # closed sessions listed under the open ones
# The power buttons of the console page, in the order shown (the API accepts more).
POWER_BUTTONS = (PowerAction.ON, PowerAction.OFF, PowerAction.CYCLE, PowerAction.RESET)
# asciinema-player runs its terminal emulator as WebAssembly, which a CSP without
# 'wasm-unsafe-eval' refuses to compile; it allows WebAssembly only, never JavaScript eval.
REPLAY_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'")


@router.get("/consoles")
async def console_list(
    viewer: ViewerDep,
    site: Annotated[str | None, Query(max_length=64)] = None,
    device: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    site = site or None
    device = device or None
    session, ctx = viewer.session, viewer.ctx
    live = [
        row for status in LIVE for row in await service.listing(session, ctx, status, device, site)
    ]
    live.sort(key=lambda row: row.created_at, reverse=True)
    recent = [
        row
        for row in await service.listing(session, ctx, None, device, site, limit=RECENT * 2)
        if row.status not in LIVE
    ][:RECENT]
    visible = await sites.list_sites(session, ctx)
    may_open = [s for s in visible if viewer.can(Role.OPERATOR, s.id)]
    return viewer.render(
        "consoles.html",
        live=[broker_of(viewer.request).read_row(row) for row in live],
        recent=[service.to_read(row) for row in recent],
        sites=visible,
        may_open=bool(may_open),
        site=site or "",
        device=device or "",
        ConsoleStatus=ConsoleStatus,
    )


@router.get("/consoles/{console_id}")
async def console_page(
    viewer: ViewerDep, console_id: str, mode: ConsoleMode = ConsoleMode.RW
) -> Response:
    """The live console; `?mode=ro` joins read-only (the switch on the page does the same)."""
    row = await service.get(viewer.session, viewer.ctx, console_id)
    operator = viewer.can(Role.OPERATOR, row.site_id)
    admin = viewer.can(Role.ADMIN, row.site_id)
    return viewer.render(
        "console.html",
        console=broker_of(viewer.request).read_row(row),
        live=row.status in LIVE,
        operator=operator,
        admin=admin,
        mode=mode if operator else ConsoleMode.RO,
        may_close=service.may_close(viewer.ctx.principal, row),  # DELETE /consoles/{id}'s rule
        power_buttons=POWER_BUTTONS,
        ConsoleStatus=ConsoleStatus,
        ConsoleMode=ConsoleMode,
    )


@router.get("/recordings/{console_id}")
async def recording_page(viewer: ViewerDep, console_id: str) -> Response:
    row = await service.get(viewer.session, viewer.ctx, console_id)
    response = viewer.render(
        "recording.html",
        console=service.to_read(row),
        closed=row.status is ConsoleStatus.CLOSED,
        reason=row.reason,
        live_states=LIVE,
    )
    response.headers["Content-Security-Policy"] = REPLAY_CSP
    return response
