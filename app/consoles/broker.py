"""The live side of consoles: one device session per target, fanned out to many viewers.

The agent holds the device session (through the hub, maybe across a site's link); the broker
keeps the central's side of it (`DeviceSession`: its row, a scrollback of recent output for
viewers who join late, the recording, the limits) and hands output to its audience
(`app/consoles/viewers.py`: each viewer's own queue, so a slow one never holds up the others or
the device, and the write lock). Everything a viewer does that changes something (joining, the
write lock, a break, closing) is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from agents.protocol import (
    CloseReason,
    ConsoleClosed,
    ConsoleControl,
    ConsoleInput,
    ConsoleOp,
    ConsoleOpen,
    ConsoleOpened,
    ConsoleOutput,
    TaskStatus,
)
from app.audit.models import EventType
from app.audit.recorder import AuditRecorder
from app.centrals.presence import Presence
from app.consoles import service
from app.consoles.models import ConsoleSession
from app.consoles.recording import Recording
from app.consoles.schemas import ConsoleRead, ConsoleRequest, ViewerRead
from app.consoles.viewers import READ_ONLY, Audience, Mode, Viewer
from app.context import RequestContext
from app.db import limit_lock_wait
from app.errors import DeviceUnavailable, InUse, RackhandError
from app.identity.models import Role
from app.uow import unit_of_work
from app.vault import Vault

log = logging.getLogger(__name__)

SCROLLBACK = 64 * 1024  # bytes of recent output a late viewer gets first
CLOSE_WAIT = 5.0  # s the agent gets to confirm a close
LOCK_WAIT = 10.0  # s a recovery waits for a row another central holds


class ConsoleFailed(DeviceUnavailable):
    """The console could not be opened on any path; the message says why per path."""

    kind = "ConsoleFailed"


class ConsoleBusy(InUse):
    kind = "ConsoleBusy"


@dataclass(frozen=True)
class Timeouts:
    open: float = 30.0  # s to wait for the agent to attach
    idle: float = 1800.0  # s without input or output before the session is closed
    max_length: float = 12 * 3600.0
    linger: float = 60.0  # s a session stays open with nobody watching


@dataclass(eq=False)
class DeviceSession:
    """The central's side of a device's console session: what came out of it, its recording,
    its limits; its viewers are its `audience`."""

    row: ConsoleSession
    cols: int
    rows: int
    opened: asyncio.Future[ConsoleOpened | ConsoleClosed]
    audience: Audience = field(default_factory=Audience)
    scrollback: bytearray = field(default_factory=bytearray)
    recording: Recording | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.monotonic)
    active: float = field(default_factory=time.monotonic)
    closing: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_reason: tuple[CloseReason, str, RequestContext | None] | None = None

    @property
    def id(self) -> str:
        return self.row.id


PowerHook = Callable[[RequestContext, str, str], Awaitable[dict[str, Any]]]
ConsoleSink = Callable[[ConsoleOpened | ConsoleOutput | ConsoleClosed], Awaitable[None]]


class ConsoleLink(Protocol):
    """How the broker reaches the agent holding a device session (`AgentHub`)."""

    def open_console(self, message: ConsoleOpen, sink: ConsoleSink) -> None: ...

    def console(self, message: ConsoleInput | ConsoleControl) -> None: ...

    def forget(self, session_id: str) -> None: ...


def broker_of(connection: HTTPConnection) -> ConsoleBroker:
    """The app's console broker, for a request or a WebSocket."""
    broker: ConsoleBroker = connection.app.state.consoles
    return broker


class ConsoleBroker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditRecorder,
        vault: Vault,
        recordings: Path,
        presence: Presence,
        link: ConsoleLink,
        power: PowerHook,
        timeouts: Timeouts | None = None,
    ) -> None:
        self._sessions = sessions
        self._presence = presence
        self._audit = audit
        self._vault = vault
        self._recordings = recordings
        self.timeouts = timeouts or Timeouts()
        self._link = link
        self._power = power
        self._live: dict[str, DeviceSession] = {}
        self._by_device: dict[int, DeviceSession] = {}
        self._device_locks: dict[int, asyncio.Lock] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def recover(self) -> int:
        """Sessions of centrals that are gone end as `lost` (at start, and at every heartbeat)."""
        async with unit_of_work(self._sessions) as session:
            await limit_lock_wait(session, LOCK_WAIT)
            return await service.abandon_open(session, await self._presence.owners(session))

    def start(self) -> None:
        """Watch for idle, over-long and unwatched sessions."""
        self._watchdog = asyncio.create_task(self._watch(), name="console-watchdog")

    # Opening --------------------------------------------------------------------------------

    async def open(
        self, ctx: RequestContext, ref: str, body: ConsoleRequest
    ) -> tuple[ConsoleRead, bool]:
        """The device's live session, opened now (True) or the one already open (False)."""
        async with unit_of_work(self._sessions) as session:
            device, site = await service.target(session, ctx, ref)
        lock = self._device_locks.setdefault(device.id, asyncio.Lock())
        async with lock:
            live = self._by_device.get(device.id)
            created = live is None or live.closing
            if live is None or live.closing:
                async with unit_of_work(self._sessions) as session:
                    device, site = await service.target(session, ctx, ref)
                    row, paths = await service.create(
                        session, ctx, self._vault, device, site, body.via, self._presence.id
                    )
                loop = asyncio.get_running_loop()
                live = DeviceSession(row, body.cols, body.rows, loop.create_future())
                self._live[row.id] = self._by_device[device.id] = live
                self._link.open_console(
                    ConsoleOpen(row.id, device.name, site.slug, tuple(paths), body.cols, body.rows),
                    self.receive,
                )
        try:
            result = await asyncio.wait_for(asyncio.shield(live.opened), self.timeouts.open)
        except TimeoutError:
            await self.close(
                live, CloseReason.TIMEOUT, "the agent did not attach the console in time", ctx
            )
            result = await live.opened
        if isinstance(result, ConsoleClosed):
            error = ConsoleBusy if result.reason is CloseReason.BUSY else ConsoleFailed
            raise error(f"{live.row.device_name}: {result.message}")
        return self.read(live), created

    def read(self, live: DeviceSession) -> ConsoleRead:
        read = service.to_read(live.row)
        read.writer = live.audience.holder()
        read.viewers = [
            ViewerRead(viewer=v.id, name=v.name, since=v.since, mode=v.mode)
            for v in live.audience.viewers.values()
        ]
        return read

    def read_row(self, row: ConsoleSession) -> ConsoleRead:
        """A session as the API's GETs answer it: with its writer and viewers while it is live
        here (the console routes and pages alike)."""
        live = self.get(row.id)
        return self.read(live) if live is not None else service.to_read(row)

    def get(self, console_id: str) -> DeviceSession | None:
        return self._live.get(console_id)

    # Messages from the agent ----------------------------------------------------------------

    async def receive(self, message: ConsoleOpened | ConsoleOutput | ConsoleClosed) -> None:
        live = self._live.get(message.session_id)
        if live is None:
            if not isinstance(message, ConsoleClosed):  # an orphan: tell the agent to let go
                self._link.console(ConsoleControl(message.session_id, ConsoleOp.CLOSE))
            return
        if isinstance(message, ConsoleOutput):
            self._output(live, message.data)
        elif isinstance(message, ConsoleOpened):
            await self._opened(live, message)
        else:
            await self._finish(live, message)

    def _output(self, live: DeviceSession, data: bytes) -> None:
        live.bytes_out += len(data)
        live.active = time.monotonic()
        live.scrollback += data
        if len(live.scrollback) > SCROLLBACK:
            del live.scrollback[: len(live.scrollback) - SCROLLBACK]
        if live.recording is not None:
            live.recording.output(data)
        for viewer in live.audience.fan_out(data):
            self._drop(live, viewer, "the viewer could not keep up with the output")

    async def _opened(self, live: DeviceSession, message: ConsoleOpened) -> None:
        started = live.row.created_at
        relative = Path("recordings") / started.strftime("%Y/%m/%d") / f"{live.id}.cast"
        live.recording = Recording(
            self._recordings / relative,
            cols=live.cols,
            rows=live.rows,
            title=f"{live.row.device_name} via {message.path} ({message.endpoint})",
            started=started.timestamp(),
        )
        async with unit_of_work(self._sessions) as session:
            live.row = await service.mark_open(
                session, live.id, message.path, message.endpoint, str(relative)
            )
        live.row.message = message.message
        if not live.opened.done():
            live.opened.set_result(message)

    async def _finish(self, live: DeviceSession, message: ConsoleClosed) -> None:
        """The agent's word that the device session is over (or the broker's, when the agent
        did not confirm a close in time): seal the record, tell viewers."""
        self._live.pop(live.id, None)
        self._link.forget(live.id)
        device_id = live.row.device_id or -1
        if self._by_device.get(device_id) is live:
            del self._by_device[device_id]
            lock = self._device_locks.get(device_id)
            if lock is not None and not lock.locked():
                del self._device_locks[device_id]  # one lock per device with a session, not ever
        reason, text, by = live.close_reason or (message.reason, message.message, None)
        recording = None
        if live.recording is not None:
            try:
                recording = await live.recording.close()
            except OSError:  # the disk failed us; the session still ends, and the audit says so
                log.exception("console %s: the recording could not be written", live.id)
                text = f"{text} (the recording could not be written: see the server log)"
        async with unit_of_work(self._sessions) as session:
            live.row = await service.mark_closed(
                session,
                live.id,
                failed=live.recording is None,  # it never opened
                reason=reason,
                message=text,
                closed_by=by,
                recording=recording,
                bytes_in=live.bytes_in,
                bytes_out=live.bytes_out,
            )
        if not live.opened.done():
            live.opened.set_result(message)
        live.audience.broadcast(type="closed", reason=reason, message=text)
        for viewer in live.audience.viewers.values():
            viewer.send(None)
        live.closed.set()

    # Closing --------------------------------------------------------------------------------

    async def close(
        self,
        live: DeviceSession,
        reason: CloseReason,
        message: str,
        by: RequestContext | None = None,
    ) -> None:
        """Ask the agent to let go; seal the session even if it does not answer."""
        if not live.closing:
            live.closing = True
            live.close_reason = (reason, message, by)
            self._link.console(ConsoleControl(live.id, ConsoleOp.CLOSE))
        try:
            await asyncio.wait_for(live.closed.wait(), CLOSE_WAIT)
        except TimeoutError:
            if not live.closed.is_set():
                await self._finish(live, ConsoleClosed(live.id, reason, message))

    async def close_all(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await asyncio.gather(
            *(
                self.close(live, CloseReason.SHUTDOWN, "the central is stopping")
                for live in self._live.values()
            )
        )

    async def _watch(self) -> None:
        """Idle sessions, sessions past their maximum length, sessions nobody watches."""
        limits = self.timeouts
        while True:
            await asyncio.sleep(min(1.0, limits.linger / 4, limits.idle / 4))
            now = time.monotonic()
            for live in list(self._live.values()):
                if live.recording is not None and not live.recording.closed:
                    live.recording.flush()  # a crash loses at most the last second
                if live.closing or not live.opened.done():
                    continue
                why = None
                if now - live.active > limits.idle:
                    why = (CloseReason.IDLE, f"no input or output for {limits.idle:g} s")
                elif now - live.started > limits.max_length:
                    why = (CloseReason.MAX_LENGTH, f"open longer than {limits.max_length:g} s")
                elif (
                    live.audience.unwatched is not None
                    and now - live.audience.unwatched > limits.linger
                ):
                    why = (CloseReason.UNWATCHED, f"nobody watched for {limits.linger:g} s")
                if why is not None:
                    self._spawn(self.close(live, *why))

    # Viewers --------------------------------------------------------------------------------

    async def join(self, live: DeviceSession, ctx: RequestContext, mode: Mode) -> Viewer:
        viewer = Viewer(uuid.uuid4().hex[:12], ctx, mode, admin=_is_admin(ctx, live))
        # hello, the scrollback and joining the fan-out happen with no await in between, so
        # the viewer's stream has every byte once: output after the scrollback, none twice.
        viewer.event(
            type="hello",
            session=live.id,
            device=live.row.device_name,
            path=live.row.path,
            you=viewer.id,
            mode=mode,
            writer=live.audience.holder_json(),
            viewers=[
                {"viewer": v.id, "name": v.name} for v in (*live.audience.viewers.values(), viewer)
            ],
        )
        if live.scrollback:
            viewer.send(bytes(live.scrollback))
        live.audience.add(viewer)
        live.audience.broadcast(type="joined", viewer=viewer.id, name=viewer.name, mode=mode)
        if mode == "rw" and live.audience.writer is None:
            self._grant(live, viewer)
        await self._audit.record(service.event(ctx, EventType.CONSOLE_JOINED, live.row, mode=mode))
        return viewer

    async def leave(self, live: DeviceSession, viewer: Viewer) -> None:
        """The viewer's socket ended (called once per viewer, dropped or not)."""
        self._detach(live, viewer)
        viewer.gone = True
        if not live.closed.is_set() and not viewer.close_reason:  # else `end` recorded it
            await self._audit.record(service.event(viewer.ctx, EventType.CONSOLE_LEFT, live.row))

    def _detach(self, live: DeviceSession, viewer: Viewer) -> None:
        held = live.audience.writer is viewer
        if not live.audience.remove(viewer):
            return
        if held:
            self._writer_changed(live, forced=False)
        live.audience.broadcast(type="left", viewer=viewer.id, name=viewer.name)

    def _drop(self, live: DeviceSession, viewer: Viewer, why: str) -> None:
        """Too far behind: out of the fan-out (and the write lock) at once, told why."""
        self.expel(live, viewer, error="TooSlow", detail=why)

    def expel(
        self,
        live: DeviceSession,
        viewer: Viewer,
        *,
        error: str,
        detail: str,
        code: int = 1000,
        reason: str = "",
    ) -> None:
        """Out of the fan-out (and the write lock) at once, told why in an error event; its
        socket is then closed with `code` and `reason`."""
        self._detach(live, viewer)
        viewer.event(type="error", error=error, detail=detail)
        viewer.close_code, viewer.close_reason = code, reason
        viewer.send(None)
        viewer.gone = True

    async def end(
        self,
        live: DeviceSession,
        viewer: Viewer,
        *,
        error: str,
        detail: str,
        code: int,
        reason: str,
    ) -> None:
        """Close one viewer's stream for a reason of its own (its credential ended, its role
        was withdrawn), audited before the socket closes."""
        viewer.close_reason = reason  # `leave` must not record it a second time
        await self._audit.record(
            service.event(viewer.ctx, EventType.CONSOLE_LEFT, live.row, why=reason)
        )
        self.expel(live, viewer, error=error, detail=detail, code=code, reason=reason)

    def renew(self, live: DeviceSession, viewer: Viewer, ctx: RequestContext) -> None:
        """The viewer's caller as re-checked: later actions (power, take-over) use its rights
        of now, not those it joined with."""
        viewer.ctx = ctx
        viewer.admin = _is_admin(ctx, live)

    def write(self, live: DeviceSession, viewer: Viewer, data: bytes) -> None:
        if viewer.mode == "ro":
            viewer.event(type="error", error="ReadOnly", detail=READ_ONLY)
            return
        if live.audience.writer is not viewer:
            viewer.event(type="error", error="ReadOnly", detail=live.audience.in_use())
            return
        if live.closing:
            return
        live.bytes_in += len(data)
        live.active = time.monotonic()
        self._link.console(ConsoleInput(live.id, data))

    async def control(self, live: DeviceSession, viewer: Viewer, message: dict[str, Any]) -> None:
        """A JSON control frame from a viewer."""
        kind = message.get("type")
        handler = {
            "take_write": self._take_write,
            "release_write": self._release_write,
            "resize": self._resize,
            "break": self._break,
            "power": self._power_action,
            "close": self._close_by,
        }.get(str(kind))
        if handler is None:
            viewer.event(
                type="error",
                error="UnknownControl",
                detail=f"unknown control {kind!r}; use take_write, release_write, resize, "
                "break, power or close",
            )
            return
        await handler(live, viewer, message)

    async def _take_write(
        self, live: DeviceSession, viewer: Viewer, message: dict[str, Any]
    ) -> None:
        holder = live.audience.writer
        if holder is viewer:
            return
        if viewer.mode == "ro":
            viewer.event(type="error", error="ReadOnly", detail=READ_ONLY)
            return
        if holder is not None and not message.get("force"):
            viewer.event(type="error", error="InUse", detail=live.audience.in_use())
            return
        if holder is not None and not viewer.admin:
            viewer.event(
                type="error",
                error="Forbidden",
                detail=f"taking the console over from {holder.name} needs the admin role",
            )
            return
        if holder is not None:
            await self._audit.record(
                service.event(
                    viewer.ctx, EventType.CONSOLE_WRITE_FORCED, live.row, taken_from=holder.name
                )
            )
        self._grant(live, viewer, forced=holder is not None)

    async def _release_write(
        self, live: DeviceSession, viewer: Viewer, message: dict[str, Any]
    ) -> None:
        if live.audience.writer is not viewer:
            return
        to = live.audience.viewers.get(str(message.get("to") or ""))
        if to is not None and to.mode == "rw":
            await self._audit.record(
                service.event(viewer.ctx, EventType.CONSOLE_WRITE_HANDED, live.row, to=to.name)
            )
            self._grant(live, to)
        else:
            self._grant(live, None)

    async def _resize(self, live: DeviceSession, viewer: Viewer, message: dict[str, Any]) -> None:
        cols, rows = message.get("cols"), message.get("rows")
        if live.audience.writer is not viewer or not (
            isinstance(cols, int)
            and isinstance(rows, int)
            and 20 <= cols <= 500
            and 5 <= rows <= 200
        ):
            return  # a viewer's window is its own business; only the writer's goes to the device
        if live.recording is not None:
            live.recording.resize(cols, rows)
        self._link.console(ConsoleControl(live.id, ConsoleOp.RESIZE, cols, rows))

    async def _break(self, live: DeviceSession, viewer: Viewer, message: dict[str, Any]) -> None:
        if live.audience.writer is not viewer:
            viewer.event(type="error", error="ReadOnly", detail=live.audience.in_use())
            return
        if message.get("confirm") is not True:
            viewer.event(
                type="error",
                error="ConfirmBreak",
                detail="a break stops Solaris/SPARC in OBP and Cisco gear in ROMMON; send "
                '{"type": "break", "confirm": true} to send it anyway',
            )
            return
        await self._audit.record(service.event(viewer.ctx, EventType.CONSOLE_BREAK, live.row))
        if live.recording is not None:
            live.recording.marker(f"break by {viewer.name}")
        self._link.console(ConsoleControl(live.id, ConsoleOp.BREAK))
        live.audience.broadcast(type="break", by=viewer.name)

    async def _power_action(
        self, live: DeviceSession, viewer: Viewer, message: dict[str, Any]
    ) -> None:
        if live.audience.writer is not viewer:
            viewer.event(type="error", error="ReadOnly", detail=live.audience.in_use())
            return
        action = str(message.get("action"))
        power = self._power

        async def act() -> None:
            try:
                result = await power(viewer.ctx, live.row.device_name, action)
            except RackhandError as exc:
                viewer.event(type="error", error=type(exc).__name__, detail=str(exc))
                return
            if live.recording is not None:
                live.recording.marker(f"power {action} by {viewer.name}: {result.get('status')}")
            live.audience.broadcast(type="power", by=viewer.name, **result)

        live.audience.broadcast(
            type="power", by=viewer.name, action=action, status=TaskStatus.RUNNING
        )
        self._spawn(act())

    async def _close_by(self, live: DeviceSession, viewer: Viewer, message: dict[str, Any]) -> None:
        if live.audience.writer is not viewer and not viewer.admin:
            viewer.event(type="error", error="ReadOnly", detail=live.audience.in_use())
            return
        await self.close(live, CloseReason.CLOSED, f"closed by {viewer.name}", viewer.ctx)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _grant(self, live: DeviceSession, viewer: Viewer | None, *, forced: bool = False) -> None:
        live.audience.grant(viewer)
        self._writer_changed(live, forced=forced)

    def _writer_changed(self, live: DeviceSession, *, forced: bool) -> None:
        """Into the recording and to every viewer: who may type now."""
        writer = live.audience.writer
        if live.recording is not None:
            live.recording.marker(f"write lock: {writer.name if writer else 'nobody'}")
        live.audience.broadcast(type="writer", writer=live.audience.holder_json(), forced=forced)


def _is_admin(ctx: RequestContext, live: DeviceSession) -> bool:
    return ctx.principal.allows(Role.ADMIN, live.row.site_id)
