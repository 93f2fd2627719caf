"""Where the central's orders and consoles go: the built-in agent, or a site's own agents.

A site with an enrolled agent is served by its agents only: the central usually cannot reach a
branch's devices and must never quietly try. When none of them is online, its work fails at
once and says since when. Everything an agent sends back is checked against what it was given
(a report about a task it was not sent, console bytes of a session it does not hold, a host
key of a box it was not asked to reach) and refused with an audit event otherwise. Reports
and console traffic go to the sink their order named, never by id prefix.

When a link drops, its unfinished tasks end `lost`, except those safe to repeat (status, on,
off), which go to another online agent of the site; its consoles end with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agents.agent import WINDOW, Agent
from agents.protocol import (
    FINISHED,
    IDEMPOTENT,
    Answer,
    Cancel,
    CloseReason,
    ConsoleClosed,
    ConsoleControl,
    ConsoleInput,
    ConsoleOpen,
    ConsoleOpened,
    ConsoleOutput,
    ConsolePath,
    ConsolePortPath,
    Credit,
    FromAgent,
    GuestPath,
    GuestsOrder,
    GuestsReport,
    HealthOrder,
    HealthReport,
    HostKeySeen,
    Order,
    Path,
    PduOutletPath,
    PowerOrder,
    Question,
    RefusedBecause,
    Report,
    SshTarget,
    TaskOrder,
    TaskStatus,
    ToAgent,
    decode,
    encode,
)
from app.audit.models import EventType
from app.audit.recorder import AuditRecorder
from app.audit.service import SYSTEM, Actor, Event
from app.fleetlink import service
from app.fleetlink.models import AgentStatus
from app.uow import unit_of_work

log = logging.getLogger(__name__)
_A = TypeVar("_A", GuestsReport, HealthReport)
_ANSWERS: dict[type[Order], type[Answer]] = {GuestsOrder: GuestsReport, HealthOrder: HealthReport}

ReportSink = Callable[[Report], None]
Sink = Callable[[Report | Answer], None]  # a held task's: a question's gets both
ConsoleMessage = ConsoleOpened | ConsoleOutput | ConsoleClosed
ConsoleSink = Callable[[ConsoleMessage], Awaitable[None]]
HostKeySink = Callable[[HostKeySeen, set[str]], Awaitable[None]]  # the key, the box's sites
STOPPING = "the central is stopping"
MAX_REFUSED = 20  # messages about work it was not given before a link is closed


@dataclass
class _Held:
    """A task on an agent: its sink, and the order itself only when it may be re-sent (the
    order carries opened secrets; others are kept no longer than sent)."""

    site: str
    sink: Sink
    order: Order | None
    timeout: float
    answer: type[Answer] | None = None  # a question: the kind of answer that ends it
    overdue: asyncio.TimerHandle | None = None  # armed when a remote agent starts the task


class Connection(ABC):
    """One agent's link, as the hub sees it: what it holds, and how to hand it a message."""

    def __init__(self, name: str, site: str | None, agent_id: int | None) -> None:
        self.name = name
        self.site = site  # None: the built-in agent, for every site without agents
        self.agent_id = agent_id
        self.tasks: dict[str, _Held] = {}
        self.consoles: dict[str, ConsoleSink] = {}
        self.consumed: dict[str, int] = {}  # console output bytes since the last credit
        self.targets: dict[tuple[str, int], set[str]] = {}  # SSH boxes it was sent: their sites
        self.opened: set[str] = set()  # console sessions it said were open
        self.window = WINDOW
        self.refused = 0
        self.heard = time.monotonic()  # the last message from the agent
        self.stale_after = float("inf")  # s of silence after which no new work goes there
        self.closing = False  # the central is ending the link: no new work goes there

    @abstractmethod
    def deliver(self, message: ToAgent) -> None:
        """Hand the agent a message, in order; never waits."""

    @abstractmethod
    def close(self, why: str, reason: RefusedBecause = RefusedBecause.REPLACED) -> None:
        """End the link (a remote one closes its WebSocket; the built-in one never ends)."""

    def note_targets(self, message: Order | ConsoleOpen) -> None:
        if isinstance(message, GuestsOrder):
            boxes = [message.host.ssh]
        else:
            boxes = [box for path in message.paths if (box := _box(path)) is not None]
        for box in boxes:
            self.targets.setdefault((box.address, box.port), set()).add(message.site)


def _box(path: Path | ConsolePath) -> SshTarget | None:
    """The SSH box a path goes through (console server, PDU, hypervisor host), if any."""
    if isinstance(path, ConsolePortPath):
        return path.server
    if isinstance(path, PduOutletPath):
        return path.pdu
    if isinstance(path, GuestPath):
        return path.host.ssh
    return None


class InProcess(Connection):
    """The built-in agent: the same `Agent`, its messages round-tripped through the wire
    encoding so the in-process path cannot drift from the remote one."""

    def __init__(self, hub: AgentHub, drivers: Mapping[str, Any] | None) -> None:
        super().__init__("built-in", None, None)
        self._hub = hub
        self.agent = Agent(self._from_agent, drivers)

    def deliver(self, message: ToAgent) -> None:
        received = decode(encode(message))
        assert not isinstance(received, FromAgent)
        self.agent.handle(received)  # type: ignore[arg-type]

    def close(self, why: str, reason: RefusedBecause = RefusedBecause.REPLACED) -> None:
        return None

    async def _from_agent(self, message: FromAgent) -> None:
        received = decode(encode(message))
        await self._hub.receive(self, received)  # type: ignore[arg-type]


class AgentHub:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditRecorder,
        on_host_key: HostKeySink,
        *,
        silence: timedelta,
        drivers: Mapping[str, Any] | None = None,
        grace: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._on_host_key = on_host_key
        self._silence = silence
        self._grace = grace  # s past a remote task's timeout before the central ends it
        self.builtin = InProcess(self, drivers)
        self._links: dict[int, Connection] = {}  # agent id → its link on this central
        self._served: dict[str, list[service.Enrolled]] = {}
        self._held: dict[str, Connection] = {}  # task id → where it runs
        self._sessions_at: dict[str, Connection] = {}  # console session id → where it is held
        self._chores: set[asyncio.Task[Any]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._refreshing = asyncio.Lock()  # one refresh at a time: the last read wins

    # Life ---------------------------------------------------------------------------------

    async def start(self, *, workers: bool, refresh_every: float) -> None:
        await self.refresh()
        if workers:
            await self.builtin.agent.start()
        self._refresher = asyncio.create_task(self._refresh_loop(refresh_every))

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for link in list(self._links.values()):
            link.close(STOPPING)
        await self.builtin.agent.close()
        await asyncio.gather(*self._chores, return_exceptions=True)

    async def refresh(self) -> None:
        """Which sites have agents, and their states (enrolment and revocation change it; so do
        links held by other centrals)."""
        async with self._refreshing, unit_of_work(self._sessions) as session:
            self._served = await service.served_sites(session, self._silence)

    async def _refresh_loop(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
            except Exception:  # the database is away: keep the last answer
                log.warning("could not refresh the sites' agents", exc_info=True)

    # Routing ------------------------------------------------------------------------------

    def route(self, site: str) -> Connection | str:
        """The connection for the site's work, or why there is none."""
        if site not in self._served:
            return self.builtin
        now = time.monotonic()
        revoked = {a.id for a in self._served[site] if a.status is AgentStatus.REVOKED}
        online = [
            link
            for link in self._links.values()
            if link.site == site
            and not link.closing
            and link.agent_id not in revoked
            and now - link.heard <= link.stale_after
        ]
        if online:
            return min(online, key=lambda link: len(link.tasks))
        return self.offline(site)

    def offline(self, site: str) -> str:
        """Why no agent of the site takes work, naming each and since when."""
        said = []
        now = time.monotonic()
        silent = {link.agent_id: now - link.heard for link in self._links.values()}
        for agent in self._served.get(site, []):
            if agent.id in silent:  # its link is still open here, but it has gone quiet
                said.append(f"{agent.name} silent for {silent[agent.id]:.0f} s")
            elif agent.status is AgentStatus.REVOKED:
                said.append(f"{agent.name} revoked at {agent.since:%Y-%m-%d %H:%M:%S} UTC")
            elif agent.status is AgentStatus.PENDING:
                said.append(f"{agent.name} enrolled, never connected")
            elif agent.status is AgentStatus.ONLINE:
                said.append(f"{agent.name} connected to another central, not this one")
            elif agent.since is not None:
                said.append(f"{agent.name} offline since {agent.since:%Y-%m-%d %H:%M:%S} UTC")
            else:
                said.append(f"{agent.name} offline")
        return (
            f"no agent of site {site} is online ({'; '.join(said)}); the site's devices are "
            "reached only through its agents (docs/agents.md)"
        )

    def submit(self, order: TaskOrder, sink: ReportSink) -> None:
        """Send the order to an agent of its site; its reports go to `sink`."""
        self._send(order, lambda report: sink(report) if isinstance(report, Report) else None)

    async def guests(self, order: GuestsOrder) -> GuestsReport:
        """The host's guests, as an agent of its site lists them; or why not (offline, lost,
        timed out), as a failed `GuestsReport`."""
        return await self._ask(order, GuestsReport)

    async def health(self, order: HealthOrder) -> HealthReport:
        """What the device's BMC says of its health, as an agent of its site read it; or why
        not, as a failed `HealthReport`."""
        return await self._ask(order, HealthReport)

    async def _ask(self, order: Question, kind: type[_A]) -> _A:
        done: asyncio.Future[_A] = asyncio.get_running_loop().create_future()

        def sink(report: Report | Answer) -> None:
            if done.done():
                return
            if isinstance(report, kind):
                done.set_result(report)
            elif isinstance(report, Report) and report.status in FINISHED:
                done.set_result(kind(report.task_id, report.status, message=report.message))

        self._send(order, sink)
        try:
            return await done
        except asyncio.CancelledError:
            self.cancel(order.task_id)
            raise

    def _send(self, order: Order, sink: Sink) -> None:
        link = self.route(order.site)
        if isinstance(link, str):
            sink(Report(order.task_id, TaskStatus.FAILED, message=link))
            return
        self._hold(link, order, sink)

    def _hold(self, link: Connection, order: Order, sink: Sink) -> None:
        again = isinstance(order, PowerOrder) and order.action in IDEMPOTENT
        kept = order if again else None
        answer = _ANSWERS.get(type(order))
        link.tasks[order.task_id] = _Held(order.site, sink, kept, order.timeout, answer)
        self._held[order.task_id] = link
        link.note_targets(order)
        link.deliver(order)

    def cancel(self, task_id: str) -> bool:
        """Ask the agent running the task to stop it; False when no agent holds it."""
        link = self._held.get(task_id)
        if link is None:
            return False
        link.deliver(Cancel(task_id))
        return True

    def open_console(self, message: ConsoleOpen, sink: ConsoleSink) -> None:
        """Open the console on an agent of its site; what it says of it goes to `sink`."""
        link = self.route(message.site)
        if isinstance(link, str):
            self._spawn(sink(ConsoleClosed(message.session_id, CloseReason.FAILED, link)))
            return
        link.consoles[message.session_id] = sink
        link.consumed[message.session_id] = 0
        self._sessions_at[message.session_id] = link
        link.note_targets(message)
        link.deliver(message)

    def console(self, message: ConsoleInput | ConsoleControl) -> None:
        """Input and controls go to the agent holding the session (if it still does)."""
        link = self._sessions_at.get(message.session_id)
        if link is not None:
            link.deliver(message)

    # What agents say ----------------------------------------------------------------------

    async def receive(self, link: Connection, message: FromAgent) -> None:
        if isinstance(message, Report | GuestsReport | HealthReport):
            self._report(link, message)
        elif isinstance(message, ConsoleOpened | ConsoleOutput | ConsoleClosed):
            await self._console(link, message)
        elif not isinstance(message, HostKeySeen):
            await self._refuse(link, f"a {type(message).__name__}, which goes to agents", message)
        elif (sites := link.targets.get((message.address, message.port))) is not None:
            await self._on_host_key(message, set(sites))  # pinned on those sites' boxes only
        else:
            await self._refuse(link, "a host key of a box it was not asked to reach", message)

    def _report(self, link: Connection, report: Report | Answer) -> None:
        held = link.tasks.get(report.task_id)
        if held is None:
            self._spawn(self._refuse(link, "a report about a task it was not given", report))
            return
        if not isinstance(report, Report) and type(report) is not held.answer:
            self._spawn(self._refuse(link, "an answer to a question it was not asked", report))
            return
        if report.status in FINISHED:
            del link.tasks[report.task_id]
            self._held.pop(report.task_id, None)
            if held.overdue is not None:
                held.overdue.cancel()
        elif link.site is not None and held.overdue is None:  # a remote agent started it
            held.overdue = asyncio.get_running_loop().call_later(
                held.timeout + self._grace, self._overdue, link, report.task_id
            )
        held.sink(report)

    def _overdue(self, link: Connection, task_id: str) -> None:
        """A remote agent started the task and never said how it ended, past its timeout: the
        central ends it (the built-in agent's runner keeps its own timeouts)."""
        held = link.tasks.pop(task_id, None)
        if held is None:
            return
        self._held.pop(task_id, None)
        within = held.timeout + self._grace
        held.sink(
            Report(
                task_id,
                TaskStatus.LOST,
                message=f"agent {link.name} of site {held.site} did not report the end of the "
                f"task within {within:g} s of starting it (its timeout and {self._grace:g} s); "
                "it may or may not have been done: check the device",
            )
        )

    async def _console(self, link: Connection, message: ConsoleMessage) -> None:
        sink = link.consoles.get(message.session_id)
        if sink is None:
            await self._refuse(link, "console traffic of a session it does not hold", message)
            return
        if isinstance(message, ConsoleOpened):
            if message.session_id in link.opened:
                await self._refuse(link, "a second ConsoleOpened for one session", message)
                return
            link.opened.add(message.session_id)
        if isinstance(message, ConsoleClosed):
            self.forget(message.session_id)
        try:
            await sink(message)
        finally:  # credit is the central's to give back, whatever its sink made of the bytes
            if isinstance(message, ConsoleOutput) and message.session_id in link.consumed:
                consumed = link.consumed[message.session_id] + len(message.data)
                if consumed >= link.window // 4:
                    link.deliver(Credit(message.session_id, consumed))
                    consumed = 0
                link.consumed[message.session_id] = consumed

    def forget(self, session_id: str) -> None:
        """The session is over at the central: nothing more of it goes to or comes from its
        agent (the broker calls it when it seals a session the agent did not confirm)."""
        link = self._sessions_at.pop(session_id, None)
        if link is not None:
            link.consoles.pop(session_id, None)
            link.consumed.pop(session_id, None)
            link.opened.discard(session_id)

    async def _refuse(self, link: Connection, what: str, message: FromAgent) -> None:
        link.refused += 1
        ident = getattr(message, "task_id", None) or getattr(message, "session_id", None)
        log.warning("agent %s sent %s (%s); refused", link.name, what, ident)
        await self._audit.record(
            Event(
                EventType.AGENT_MESSAGE_REFUSED,
                self.actor(link),
                outcome="denied",
                target_type="agent",
                target_id=link.agent_id,
                target_name=f"{link.site}/{link.name}",
                site=link.site,
                details={"what": what, "message": type(message).__name__, "id": ident},
            )
        )
        if link.refused >= MAX_REFUSED:
            why = f"it sent {link.refused} messages that were refused"
            link.close(why, RefusedBecause.PROTOCOL)

    def actor(self, link: Connection) -> Actor:
        return SYSTEM if link.agent_id is None else Actor("agent", link.agent_id, link.name)

    # Links --------------------------------------------------------------------------------

    def link_up(self, link: Connection) -> Connection | None:
        """A remote agent's link is up; an older link of the same agent is returned, to close."""
        assert link.agent_id is not None
        older = self._links.get(link.agent_id)
        self._links[link.agent_id] = link
        return older

    def link_down(self, link: Connection, why: str) -> None:
        """The link is gone: its tasks end `lost` or move to another agent; consoles end."""
        if link.agent_id is not None and self._links.get(link.agent_id) is link:
            del self._links[link.agent_id]
        tasks, link.tasks = link.tasks, {}
        for task_id, held in tasks.items():
            self._held.pop(task_id, None)
            if held.overdue is not None:
                held.overdue.cancel()
                held.overdue = None
            other = self.route(held.site) if held.order is not None else None
            if held.order is not None and isinstance(other, Connection):
                self._hold(other, held.order, held.sink)  # safe to repeat: status, on, off
                continue
            held.sink(
                Report(
                    task_id,
                    TaskStatus.LOST,
                    message=f"agent {link.name} of site {held.site} lost its link ({why}) "
                    "while the task ran; it may or may not have been done: check the device",
                )
            )
        consoles = dict(link.consoles)
        for session_id, sink in consoles.items():
            self.forget(session_id)
            ended = ConsoleClosed(
                session_id,
                CloseReason.AGENT,
                f"agent {link.name} of site {link.site} lost its link ({why}); open the console "
                "again (another agent of the site takes it if one is online)",
            )
            self._spawn(sink(ended))

    def link_of(self, agent_id: int) -> Connection | None:
        return self._links.get(agent_id)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
