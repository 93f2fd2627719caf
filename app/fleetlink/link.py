"""The central's end of a site agent's link: a WebSocket the agent dialled out to.

The agent's credential is the only thing that opens it (a user's token or cookie does not);
the first frame must be a `Hello` of this protocol version for the agent's own site. Orders
and controls go out ahead of console input (two lanes), console output comes in within the
credit the hub grants, and a link silent for three heartbeats is closed as dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.websockets import WebSocket, WebSocketDisconnect

from agents.link import Lanes, stopped
from agents.protocol import (
    PROTOCOL,
    FromAgent,
    Heartbeat,
    Hello,
    Message,
    Refusal,
    RefusedBecause,
    ToAgent,
    Welcome,
    decode,
    encode,
    hello_protocol,
)
from app.audit.models import EventType
from app.audit.recorder import AuditRecorder
from app.audit.service import Actor, Event
from app.db import utcnow
from app.fleetlink import service
from app.fleetlink.hub import MAX_REFUSED, STOPPING, AgentHub, Connection
from app.identity.auth import source_ip
from app.identity.rejections import Presented, RefusalLog, Rejection
from app.uow import unit_of_work

log = logging.getLogger(__name__)

HELLO_WAIT = 10.0  # s for the first frame
CLOSE_CODES = {
    RefusedBecause.CREDENTIAL: 4401,
    RefusedBecause.REVOKED: 4403,
    RefusedBecause.SITE: 4403,
    RefusedBecause.VERSION: 4400,
    RefusedBecause.HELLO: 4400,
    RefusedBecause.REPLACED: 4409,
    RefusedBecause.SILENT: 4408,
    RefusedBecause.STOPPING: 1001,
    RefusedBecause.PROTOCOL: 4400,
}


class RemoteLink(Connection):
    def __init__(self, websocket: WebSocket, found: service.Credentialed) -> None:
        super().__init__(found.name, found.site, found.agent_id)
        self.websocket = websocket
        self._lanes = Lanes()
        self.ending: Refusal | None = None  # why the central ends the link, once it does
        self.done = asyncio.Event()

    def deliver(self, message: ToAgent) -> None:
        self._lanes.put(message)

    def say(self, message: Message) -> None:
        self._lanes.put(message)

    def close(self, why: str, reason: RefusedBecause = RefusedBecause.REPLACED) -> None:
        self.end(RefusedBecause.STOPPING if why == STOPPING else reason, why)

    def end(self, reason: RefusedBecause, message: str) -> None:
        """Say why, then close: after what is already queued ahead of it. No new work comes."""
        if self.ending is None:
            self.closing = True
            self.ending = Refusal(reason, message)
            self._lanes.put(self.ending)

    async def send_loop(self) -> None:
        while True:
            message = await self._lanes.get()
            await self.websocket.send_bytes(encode(message))
            if message is self.ending:
                await self.websocket.close(CLOSE_CODES[message.reason], message.message[:120])
                self.done.set()
                return


async def _refuse(websocket: WebSocket, reason: RefusedBecause, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_bytes(encode(Refusal(reason, message)))
        await websocket.close(CLOSE_CODES[reason], message[:120])


class LinkServer:
    """Serves `WS /api/v1/agents/link`: one call of `serve` per connected agent."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        hub: AgentHub,
        audit: AuditRecorder,
        refusals: RefusalLog,
        central: str,
        *,
        heartbeat: float,
    ) -> None:
        self._sessions = sessions
        self._hub = hub
        self._audit = audit
        self._refusals = refusals
        self._central = central
        self.heartbeat = heartbeat

    @property
    def silence(self) -> timedelta:
        return timedelta(seconds=3 * self.heartbeat)

    async def serve(self, websocket: WebSocket) -> None:
        scheme, _, credential = websocket.headers.get("authorization", "").partition(" ")
        await websocket.accept()
        # The hello is read before any refusal: an agent sends it as soon as the link is up,
        # and a refusal sent first could close the link under it, unread.
        try:
            first = await asyncio.wait_for(websocket.receive_bytes(), HELLO_WAIT)
        except (TimeoutError, WebSocketDisconnect, KeyError, RuntimeError):
            await _refuse(websocket, RefusedBecause.SILENT, f"no hello within {HELLO_WAIT:g} s")
            return
        async with unit_of_work(self._sessions) as session:
            found = (
                await service.by_credential(session, credential)
                if scheme.lower() == "bearer"
                else None
            )
        if found is None or found.revoked:
            await self._refusals.record(
                Rejection.of(
                    Presented.AGENT,
                    source_ip(websocket),
                    None,
                    websocket.url.path,
                    websocket.headers.get("user-agent"),
                )
            )
            if found is None:
                await _refuse(
                    websocket,
                    RefusedBecause.CREDENTIAL,
                    "the agent credential is unknown; enrol the agent (POST /api/v1/agents) "
                    "and start it with the new join token",
                )
            else:
                await _refuse(
                    websocket,
                    RefusedBecause.REVOKED,
                    "this agent's enrolment was revoked; enrol it again for a new join token",
                )
            return
        hello = await self._hello(websocket, found, first)
        if hello is None:
            return
        link = RemoteLink(websocket, found)
        link.stale_after = 2 * self.heartbeat  # a missed beat and a half: send work elsewhere
        link.say(Welcome(PROTOCOL, found.agent_id, self.heartbeat, link.window))  # before work
        since = utcnow()
        why = "an error in the central (its log says which)"
        try:
            older = self._hub.link_up(link)
            if older is not None:
                older.close("the same agent connected again")
            address = source_ip(websocket)
            async with unit_of_work(self._sessions) as session:
                since = await service.connected(
                    session, found.agent_id, self._central, address, hello.version
                )
            await self._hub.refresh()
            await self._event(
                EventType.AGENT_CONNECTED, link, address=address, version=hello.version
            )
            why = await self._run(link)
        except Exception:
            log.exception("the link of agent %s/%s failed", link.site, link.name)
            raise
        finally:  # the link's work ends whatever ended the link
            self._hub.link_down(link, why)
            await self._closed(link, since, why)

    async def _closed(self, link: RemoteLink, since: datetime, why: str) -> None:
        try:
            async with unit_of_work(self._sessions) as session:
                await service.disconnected(session, link.agent_id or 0, since)
            await self._hub.refresh()
        except Exception:  # the database is away: the agent reads offline once stale anyway
            log.warning("could not note that agent %s disconnected", link.name, exc_info=True)
        await self._event(EventType.AGENT_DISCONNECTED, link, why=why)

    async def _hello(
        self, websocket: WebSocket, found: service.Credentialed, first: bytes
    ) -> Hello | None:
        version = hello_protocol(first)
        if version is not None and version != PROTOCOL:
            await _refuse(
                websocket,
                RefusedBecause.VERSION,
                f"this central speaks agent protocol {PROTOCOL} and the agent speaks {version}: "
                "run the same Rackhand release on both",
            )
            return None
        try:
            hello = decode(first)
        except ValueError:
            hello = None
        if not isinstance(hello, Hello):
            await _refuse(websocket, RefusedBecause.HELLO, "the first message must be a Hello")
            return None
        if hello.site != found.site:
            await self._audit.record(
                Event(
                    EventType.AGENT_SITE_REFUSED,
                    Actor("agent", found.agent_id, found.name),
                    outcome="denied",
                    target_type="agent",
                    target_id=found.agent_id,
                    target_name=f"{found.site}/{found.name}",
                    site=found.site,
                    source_ip=source_ip(websocket),
                    details={"asked_site": hello.site[:64]},
                )
            )
            await _refuse(
                websocket,
                RefusedBecause.SITE,
                f"this agent is enrolled for site {found.site}, not {hello.site[:64]}",
            )
            return None
        return hello

    async def _run(self, link: RemoteLink) -> str:
        """Receive until the link ends; the reason it ended.

        Frames are read in a loop (no task and no wait per frame: a burst of reports is taken
        in one loop turn) under a timeout that bounds only the read, never the handling of what
        was read; the sender ending (a failed send, or the central's refusal sent) cuts a read
        short.
        """
        sender = asyncio.create_task(link.send_loop())
        beats = asyncio.create_task(self._beat(link))
        loop = asyncio.get_running_loop()
        bound = 3 * self.heartbeat
        silence = asyncio.timeout(None)
        reading = False

        def sender_ended(_: asyncio.Task[None]) -> None:
            if reading:
                silence.reschedule(loop.time())

        sender.add_done_callback(sender_ended)
        try:
            async with silence:
                while not sender.done():
                    silence.reschedule(loop.time() + bound)
                    reading = True
                    frame = await link.websocket.receive_bytes()
                    reading = False
                    silence.reschedule(None)
                    link.heard = time.monotonic()
                    await self._take(link, frame)
            return link.ending.message if link.ending else "the link could not be written"
        except TimeoutError:
            if sender.done():
                return link.ending.message if link.ending else "the link could not be written"
            silent = f"silent for three heartbeats ({bound:g} s)"
            link.end(RefusedBecause.SILENT, silent)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.done.wait(), 5)
            return silent
        except (WebSocketDisconnect, RuntimeError):
            return link.ending.message if link.ending else "the agent closed the link"
        except KeyError:  # Starlette's answer to a text frame where bytes were expected
            return "the agent sent a text frame; the link carries binary frames only"
        finally:
            sender.remove_done_callback(sender_ended)
            await stopped(beats, sender)

    async def _take(self, link: RemoteLink, frame: bytes) -> None:
        try:
            message = decode(frame)
        except ValueError as exc:
            log.warning("agent %s sent a frame that is no message: %s", link.name, exc)
            link.refused += 1  # counted with the other refusals: a flood ends the link
            if link.refused >= MAX_REFUSED:
                link.close(
                    f"it sent {link.refused} frames that were refused", RefusedBecause.PROTOCOL
                )
            return
        if isinstance(message, Heartbeat):
            await self._heard(link, message)
        elif not isinstance(message, Hello | Refusal | Welcome):
            await self._received(link, message)  # type: ignore[arg-type]

    async def _received(self, link: RemoteLink, message: FromAgent) -> None:
        """One message into the hub; a failure there (the database, say) is this message's,
        never the link's: the other consoles and tasks on it go on."""
        try:
            await self._hub.receive(link, message)
        except Exception:
            log.exception("agent %s: could not take a %s", link.name, type(message).__name__)

    async def _heard(self, link: RemoteLink, beat: Heartbeat) -> None:
        try:
            async with unit_of_work(self._sessions) as session:
                live = await service.seen(
                    session, link.agent_id or 0, self._central, beat.tasks, beat.consoles
                )
        except Exception:  # a database blip: the next heartbeat writes it
            log.warning("could not note agent %s's heartbeat", link.name, exc_info=True)
            return
        if not live:
            link.end(RefusedBecause.REVOKED, "this agent's enrolment was revoked")

    async def _beat(self, link: RemoteLink) -> None:
        """The central's heartbeat, so the agent knows the link is alive both ways."""
        while True:
            await asyncio.sleep(self.heartbeat)
            link.say(Heartbeat(len(link.tasks), len(link.consoles)))

    def revoked(self, agent_id: int) -> None:
        link = self._hub.link_of(agent_id)
        if isinstance(link, RemoteLink):
            link.end(RefusedBecause.REVOKED, "this agent's enrolment was revoked")

    async def _event(self, type_: EventType, link: RemoteLink, **details: object) -> None:
        await self._audit.record(
            Event(
                type_,
                self._hub.actor(link),
                target_type="agent",
                target_id=link.agent_id,
                target_name=f"{link.site}/{link.name}",
                site=link.site,
                source_ip=source_ip(link.websocket),
                details=dict(details),
            )
        )
