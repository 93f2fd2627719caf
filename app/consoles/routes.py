"""HTTP and WebSocket routes of consoles: open, list, attach, close, download the recording."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response, WebSocket, status
from fastapi.responses import FileResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from agents.protocol import CloseReason
from app.audit.models import EventType
from app.consoles import service
from app.consoles.broker import ConsoleBroker, DeviceSession, broker_of
from app.consoles.models import ConsoleMode, ConsoleStatus
from app.consoles.schemas import ConsolePage, ConsoleRead, ConsoleRequest
from app.consoles.viewers import Item, Viewer
from app.deps import SessionDep, own_transactions
from app.errors import Forbidden, Hidden, InUse, NotFound, RackhandError, Refused, Unauthenticated
from app.identity import service as identity
from app.identity.auth import Ctx, connection_context
from app.identity.models import Role
from app.identity.principal import Ended
from app.uow import unit_of_work

log = logging.getLogger(__name__)
router = APIRouter(tags=["consoles"])
FRAME = 64 * 1024  # output bytes coalesced into one WebSocket frame at most
CLOSE_CODES = {Unauthenticated: 4401, Forbidden: 4403, Hidden: 4404, NotFound: 4404}
ENDED = CLOSE_CODES[Unauthenticated]  # the viewer's credential stopped working mid-stream
# Re-checks in a row that may fail (a database blip) before a stream ends: fail closed, not at once.
RECHECK_FAILURES = 3


@router.post("/devices/{device}/consoles", status_code=status.HTTP_201_CREATED)
@own_transactions
async def open_console(
    request: Request, response: Response, ctx: Ctx, device: str, body: ConsoleRequest
) -> ConsoleRead:
    """The device's console session: opened now (201), or the one already open (200) to join."""
    ctx = dataclasses.replace(
        ctx, ticket=body.ticket or ctx.ticket, reason=body.reason or ctx.reason
    )
    read, created = await broker_of(request).open(ctx, device, body)
    if read.stream is not None and body.mode is ConsoleMode.RO:
        read.stream += "?mode=ro"  # the stream to join, as asked (the session itself is shared)
    if not created:
        response.status_code = status.HTTP_200_OK
    return read


@router.get("/consoles")
async def list_consoles(
    request: Request,
    session: SessionDep,
    ctx: Ctx,
    status_: Annotated[ConsoleStatus | None, Query(alias="status")] = None,
    device: str | None = None,
    site: str | None = None,
) -> ConsolePage:
    """Console sessions at the caller's sites, newest first (at most 500)."""
    rows = await service.listing(session, ctx, status_, device, site)
    broker = broker_of(request)
    return ConsolePage(items=[broker.read_row(row) for row in rows])


@router.get("/consoles/{console_id}")
async def get_console(
    request: Request, session: SessionDep, ctx: Ctx, console_id: str
) -> ConsoleRead:
    row = await service.get(session, ctx, console_id)
    return broker_of(request).read_row(row)


@router.delete("/consoles/{console_id}", status_code=status.HTTP_204_NO_CONTENT)
@own_transactions
async def close_console(request: Request, session: SessionDep, ctx: Ctx, console_id: str) -> None:
    """Close a live session (its opener, or an admin at the site); viewers are told why."""
    row = await service.get(session, ctx, console_id)
    service.require_close(ctx, row)
    live = broker_of(request).get(row.id)
    if live is None:
        raise InUse(f"console session {row.id} is already {row.status}")
    await broker_of(request).close(
        live, CloseReason.CLOSED, f"closed by {ctx.principal.actor.name}", ctx
    )


@router.get(
    "/consoles/{console_id}/recording",
    response_class=FileResponse,
    responses={200: {"content": {"application/x-asciicast": {}}}},
)
async def recording(
    request: Request, session: SessionDep, ctx: Ctx, console_id: str
) -> FileResponse:
    """The session's asciicast v2 recording, once the session is closed; downloads are audited."""
    row = await service.get(session, ctx, console_id)
    ctx.require(Role.OPERATOR, row.site_id, what="reading a console recording",
                target_type="device", target_id=row.device_id, target_name=row.device_name,
                site=row.site)  # fmt: skip
    if row.recording is None:
        raise NotFound(f"console session {row.id} has no recording: it never opened")
    if row.status is not ConsoleStatus.CLOSED:
        raise InUse(
            f"console session {row.id} is still open; its recording is served once it closes"
        )
    path = Path(request.app.state.settings.data_dir) / row.recording
    if not path.is_file():
        log.error("the recording of console session %s is missing: %s", row.id, path)
        raise NotFound(f"the recording of console session {row.id} is missing on the server")
    await request.app.state.audit.record(
        service.event(ctx, EventType.CONSOLE_RECORDING_READ, row, sha256=row.recording_sha256)
    )
    return FileResponse(
        path,
        media_type="application/x-asciicast",
        filename=f"{row.device_name}-{row.id}.cast",
        headers={"X-Recording-SHA256": row.recording_sha256 or ""},
    )


@router.websocket("/consoles/{console_id}/stream")
async def stream(websocket: WebSocket, console_id: str, mode: Literal["rw", "ro"] = "rw") -> None:
    """Raw bytes both ways in binary frames; JSON control and events in text frames."""
    broker = broker_of(websocket)
    await websocket.accept()
    try:
        ctx = await connection_context(websocket)
        live = broker.get(console_id)
        if live is None:
            raise NotFound(f"no open console session {console_id!r}")
        service.admit(ctx, live.row)
    except RackhandError as exc:
        if isinstance(exc, Refused) and exc.event is not None:
            await websocket.app.state.refusals.record(exc.event)
        code = next((c for cls, c in CLOSE_CODES.items() if isinstance(exc, cls)), 4400)
        error = getattr(exc, "kind", type(exc).__name__)
        await websocket.send_text(
            orjson.dumps({"type": "error", "error": error, "detail": str(exc)}).decode()
        )
        await websocket.close(code)
        return
    viewer = await broker.join(live, ctx, mode)
    sender = asyncio.create_task(_send(websocket, viewer))
    guard = asyncio.create_task(_guard(websocket, broker, live, viewer))
    try:
        await _receive(websocket, broker, live, viewer)
    finally:
        guard.cancel()
        await broker.leave(live, viewer)
        viewer.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await sender
        await asyncio.gather(guard, return_exceptions=True)


async def _guard(
    websocket: WebSocket, broker: ConsoleBroker, live: DeviceSession, viewer: Viewer
) -> None:
    """Re-check the viewer's caller every few seconds while it watches.

    The handshake checked the credential once; a token revoked, a session ended (logout, new
    password) or a role withdrawn afterwards closes the stream within `stream_recheck_seconds`,
    with close code 4401 (or 4403/4404) and the reason.
    """
    every = websocket.app.state.settings.stream_recheck_seconds
    failures = 0
    while not viewer.gone:
        await asyncio.sleep(every)
        try:
            async with unit_of_work(websocket.app.state.sessions) as session:
                found = await identity.refresh(session, viewer.ctx.principal)
        except Exception:  # the database is busy or gone: a check that cannot run is no pass
            failures += 1
            log.warning("console stream %s: re-check %d failed", live.row.id, failures)
            if failures < RECHECK_FAILURES:
                continue
            # Closed first (that needs no database), then audited as far as the database lets.
            detail = "the caller's access could not be re-checked; the console stream ends"
            reason = Ended.ACCESS_WITHDRAWN
            broker.expel(live, viewer, error="Unavailable", detail=detail, code=1011, reason=reason)
            left = service.event(viewer.ctx, EventType.CONSOLE_LEFT, live.row, why=reason)
            with contextlib.suppress(Exception):
                await websocket.app.state.audit.record(left)
            return
        failures = 0
        if isinstance(found, Ended):
            detail = f"{found}: the console stream ends; log in again or use a valid token"
            await broker.end(
                live, viewer, error="Unauthenticated", detail=detail, code=ENDED, reason=found
            )
            return
        ctx = dataclasses.replace(viewer.ctx, principal=found)
        try:
            service.admit(ctx, live.row)
        except RackhandError as exc:
            if isinstance(exc, Refused) and exc.event is not None:
                await websocket.app.state.refusals.record(exc.event)
            code = next((c for cls, c in CLOSE_CODES.items() if isinstance(exc, cls)), 4400)
            kind = getattr(exc, "kind", type(exc).__name__)
            await broker.end(
                live, viewer, error=kind, detail=str(exc), code=code, reason=Ended.ACCESS_WITHDRAWN
            )
            return
        broker.renew(live, viewer, ctx)


async def _receive(
    websocket: WebSocket, broker: ConsoleBroker, live: DeviceSession, viewer: Viewer
) -> None:
    while not viewer.gone:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            broker.write(live, viewer, data)
            continue
        text = message.get("text")
        try:
            control = orjson.loads(text or "")
            if not isinstance(control, dict):
                raise ValueError("not an object")
        except ValueError:
            example = '{"type": "take_write"}'
            viewer.event(type="error", error="BadControl", detail=f"send JSON such as {example}")
            continue
        await broker.control(live, viewer, control)


async def _send(websocket: WebSocket, viewer: Viewer) -> None:
    """The viewer's queue to its socket; output queued back to back goes as one frame."""
    queue = viewer.queue
    following: Item = b""  # b"": nothing held back
    try:
        while True:
            item = following if following != b"" else await queue.get()
            following = b""
            if item is None:
                break
            viewer.sent(item)
            if isinstance(item, str):
                await websocket.send_text(item)
                continue
            chunks = [item]
            size = len(item)
            while size < FRAME and not queue.empty():
                following = queue.get_nowait()
                if not isinstance(following, bytes):
                    break  # a text frame or the end: sent after this output
                viewer.sent(following)
                chunks.append(following)
                size += len(following)
                following = b""
            await websocket.send_bytes(b"".join(chunks))
    except (WebSocketDisconnect, RuntimeError):
        return
    if websocket.client_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(viewer.close_code, viewer.close_reason or None)
