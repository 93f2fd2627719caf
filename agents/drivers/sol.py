"""IPMI Serial-over-LAN consoles: a `SolChannel` in asyncio, its pyghmi side on the IPMI reactor.

From the BMC: pyghmi's receive path runs inside the reactor's pump, and hands each payload to
the caller's loop with `loop.call_soon_threadsafe` into the channel's bounded `OutputBuffer`.
To the BMC: `write` queues the bytes on the reactor (`reactor().call`); there pyghmi sends them a
packet at a time as the BMC acks, and nothing waits for an ack on the reactor thread (see
`pyghmi_shim._Console`), so one slow console never holds up another BMC. pyghmi's keep-alive
for SOL (Get Payload Instance Info, 0x4B) runs from the same pump, every 25-30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial

from agents.drivers import pyghmi_shim as shim
from agents.drivers.base import Busy, DeviceTimeout, DriverError, Refused
from agents.drivers.buffer import CLOSED, OutputBuffer
from agents.drivers.ipmi_errors import completion_error, login_error, unreachable
from agents.drivers.ipmi_reactor import Key, Request, reactor

log = logging.getLogger(__name__)

WRITE_BACKLOG = 16 * 1024  # bytes written but not yet sent to the BMC before `write` waits
_CLOSE_POLL = 0.05  # s between tries to deactivate while the keep-alive is out
_ACTIVATE = Request(0x06, 0x48, b"", retry=True, name="Activate Payload (SOL)")


class SolChannel:
    """One SOL session as a `ConsoleChannel`; `reason` says why it ended, once it has."""

    def __init__(self, sol: _Sol) -> None:
        self._sol = sol

    @property
    def endpoint(self) -> str:
        return self._sol.endpoint

    @property
    def reason(self) -> str | None:
        """None while open; `CLOSED` after `close`; else what ended it, in words."""
        return self._sol.output.reason

    @property
    def dropped(self) -> int:
        """Bytes of output dropped because nobody read them in time."""
        return self._sol.output.dropped

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._sol.output.chunks()

    async def write(self, data: bytes) -> None:
        """Queue `data` for the BMC; waits only while 16 KiB are still unsent."""
        if data:
            await self._input(data)

    async def send_break(self) -> None:
        """A serial break: SOL's generate-break bit, in order with what was written."""
        await self._input(None)

    async def resize(self, cols: int, rows: int) -> None:
        """Nothing to do: a serial line has no window size."""

    async def close(self) -> None:
        """Deactivate the SOL payload and close the session; output read so far stays readable."""
        done = asyncio.get_running_loop().create_future()
        reactor().call(partial(self._sol.close, done))
        await done

    async def _input(self, data: bytes | None) -> None:
        if self._sol.output.reason is not None:
            raise DriverError(f"the SOL console of BMC {self.endpoint} has ended ({self.reason})")
        accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        reactor().call(partial(self._sol.write, data, accepted))
        await accepted


async def open_sol(
    key: Key, endpoint: str, login_timeout: float, request_timeout: float
) -> SolChannel:
    """Log in to the BMC in a session of its own and activate SOL on it."""
    loop = asyncio.get_running_loop()
    sol = _Sol(key, endpoint, loop, login_timeout + request_timeout, request_timeout)
    consoles = _consoles()
    reactor().call(partial(consoles.start, sol))
    try:
        await sol.opened
    except asyncio.CancelledError:
        reactor().call(partial(sol.close, None))  # whatever it got to: undone
        raise
    return SolChannel(sol)


def _open_error(endpoint: str, suite: int, failure: shim.SolFailure) -> DriverError:
    if failure.stage == "login":
        return login_error(endpoint, suite, failure.detail)
    if failure.detail == shim.SOL_BUSY:
        return Busy(f"BMC {endpoint}: another SOL session is active on this BMC")
    if failure.code == 0x82:
        return Busy(f"BMC {endpoint}: {failure.detail}; close one, or try again later")
    if failure.code and failure.detail:
        return Refused(f"BMC {endpoint} refused to activate SOL: {failure.detail}")
    if failure.code:
        return completion_error(endpoint, _ACTIVATE, failure.code)
    if failure.detail == "timeout":
        return DeviceTimeout(f"BMC {endpoint} logged in but did not answer {_ACTIVATE.name}")
    return Refused(f"BMC {endpoint} could not activate SOL ({failure.detail})")


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[None] | None,
    error: BaseException | None = None,
) -> None:
    """Settle a caller's future from the reactor thread (if the caller still waits)."""
    if future is None:
        return

    def settle() -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody waits
        loop.call_soon_threadsafe(settle)


@dataclass(eq=False)
class _Sol:
    """One console as the reactor thread sees it: opening, open, closing or ended."""

    key: Key
    endpoint: str
    loop: asyncio.AbstractEventLoop
    open_timeout: float
    request_timeout: float
    output: OutputBuffer = field(default_factory=OutputBuffer)
    opened: asyncio.Future[None] = field(init=False)
    state: str = "opening"
    link: shim.SolLink | None = None
    deadline: float | None = None
    deactivating: bool = False
    writes: deque[tuple[bytes | None, asyncio.Future[None]]] = field(default_factory=deque)
    closers: list[asyncio.Future[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.opened = self.loop.create_future()

    # Every method below runs on the reactor thread.

    def start(self) -> None:
        address, port, username, password, suite, privilege = self.key
        self.deadline = time.monotonic() + self.open_timeout
        call = reactor().call
        try:
            self.link = shim.SolLink(
                address,
                port,
                username,
                password,
                suite,
                privilege=privilege,
                on_opened=lambda failure: call(partial(self._opened, failure)),
                on_output=self._output,
                on_ended=lambda detail: call(partial(self._ended, detail)),
            )
        except Exception as exc:  # e.g. pyghmi refusing a user name longer than 16 bytes
            self._fail_open(Refused(f"BMC {self.endpoint}: cannot open a session: {exc}"))

    def write(self, data: bytes | None, accepted: asyncio.Future[None]) -> None:
        if self.state != "open":
            ended = DriverError(f"the SOL console of BMC {self.endpoint} has ended")
            _settle(self.loop, accepted, ended)
            return
        self.writes.append((data, accepted))
        self._send_writes()

    def close(self, done: asyncio.Future[None] | None) -> None:
        if done is not None:
            self.closers.append(done)
        if self.state == "opening":
            self._fail_open(DriverError(f"the SOL console of BMC {self.endpoint} was closed"))
        elif self.state == "open":
            self.state = "closing"
            self.deadline = time.monotonic() + self.request_timeout
            self._deactivate()
        elif self.state == "ended":
            self._finish(CLOSED)

    def tick(self, now: float) -> float | None:
        """Resends, queued writes and deadlines; when this console next needs a turn."""
        link = self.link
        if link is not None and self.state == "open":
            link.resend(now)
            self._send_writes()
        if self.state == "closing" and not self.deactivating:
            self._deactivate()
        if self.deadline is not None and now >= self.deadline:
            if self.state == "opening":
                self._fail_open(unreachable(self.endpoint))
            elif self.state == "closing":
                self._finish(CLOSED)  # deactivation unanswered: closing the session ends it
        wanted = [self.deadline]
        if link is not None and self.state == "open":
            wanted.append(link.next_resend)
        if self.state == "closing" and not self.deactivating:
            wanted.append(now + _CLOSE_POLL)
        return min((at for at in wanted if at is not None), default=None)

    def _output(self, data: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody reads
            self.loop.call_soon_threadsafe(self.output.put, data)

    def _opened(self, failure: shim.SolFailure | None) -> None:
        if self.state != "opening":
            return
        if failure is not None:
            self._fail_open(_open_error(self.endpoint, self.key[4], failure))
            return
        self.state = "open"
        self.deadline = None
        _settle(self.loop, self.opened)

    def _fail_open(self, error: BaseException) -> None:
        self._finish(f"did not open: {error}")
        _settle(self.loop, self.opened, error)

    def _ended(self, detail: str) -> None:
        if self.state != "open":
            return
        reason = f"BMC {self.endpoint} ended the SOL session ({detail})"
        log.warning("%s", reason)
        self._finish(reason)

    def _send_writes(self) -> None:
        link = self.link
        assert link is not None
        while self.writes and link.backlog < WRITE_BACKLOG:
            data, accepted = self.writes.popleft()
            if data is None:
                link.send_break()
            else:
                link.write(data)
            _settle(self.loop, accepted)

    def _deactivate(self) -> None:
        assert self.link is not None
        self.deactivating = self.link.deactivate(
            lambda: reactor().call(partial(self._finish, CLOSED))
        )

    def _finish(self, reason: str) -> None:
        """Close the session (once), end the output, and answer whoever waits."""
        if self.state != "ended":
            self.state = "ended"
            self.deadline = None
            if self.link is not None:
                self.link.close()
            with contextlib.suppress(RuntimeError):  # the caller's loop closed
                self.loop.call_soon_threadsafe(self.output.end, reason)
            ended = DriverError(f"the SOL console of BMC {self.endpoint} has ended ({reason})")
            while self.writes:
                _settle(self.loop, self.writes.popleft()[1], ended)
        while self.closers:
            _settle(self.loop, self.closers.pop())


class _Consoles:
    """Every console of the process, on the reactor thread: their resends and deadlines."""

    def __init__(self) -> None:
        self._live: set[_Sol] = set()

    def start(self, sol: _Sol) -> None:
        self._live.add(sol)
        sol.start()

    def tick(self, now: float) -> float | None:
        wanted = []
        for sol in list(self._live):
            at = sol.tick(now)
            if sol.state == "ended":
                self._live.discard(sol)
            elif at is not None:
                wanted.append(at)
        return min(wanted, default=None)


_registry: list[_Consoles] = []
_registry_lock = threading.Lock()


def _consoles() -> _Consoles:
    """The process's console registry, ticking on the reactor (created on first use)."""
    with _registry_lock:
        if not _registry:
            _registry.append(_Consoles())
            reactor().add_ticker(_registry[0])
        return _registry[0]
