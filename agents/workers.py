"""Device I/O spread over child processes: a driver's work on several cores, off the caller's GIL.

pyghmi is pure Python and CPU-bound at login, and the IPMI driver runs one reactor thread per
process; in the central's process it also competes with the web server and the database. A
`WorkerPool` looks like a driver but forwards each call to one of N `python -m agents.worker`
children, chosen by a stable hash of the endpoint, so a BMC's warm session stays in one child
and the runner's one-request-per-BMC ordering holds there. Calls (`DeviceCall`) and answers
(`DeviceAnswer`) are agents.protocol messages in the link's encoding, one per line over the
children's stdin and stdout (`encode` never writes a newline: readline finds the end in C and
a child's output stays readable); a child's stderr is the caller's.

Consoles too: `open_console` opens the device's console in the child that serves its endpoint
and returns a proxy here; the console's session id is its open call's id. The child sends its
output as `ConsoleOutput`, at most one per console per loop turn, between the answers, and
then one `ConsoleClosed`; input goes the other way as `ConsoleInput` and `ConsoleControl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import orjson

from agents.drivers.base import (
    AuthFailed,
    Busy,
    DeviceTimeout,
    DriverError,
    NoSession,
    PoweredOff,
    Refused,
    Unreachable,
    Unsupported,
)
from agents.drivers.buffer import CLOSED, OutputBuffer
from agents.protocol import (
    BootDevice,
    ConsoleClosed,
    ConsoleControl,
    ConsoleInput,
    ConsoleOp,
    ConsoleOutput,
    ConsolePath,
    DeviceAnswer,
    DeviceCall,
    HealthData,
    HealthRead,
    Path,
    PowerAction,
    PowerState,
    ToWorker,
    WorkerOp,
    decode_worker,
    encode,
)

log = logging.getLogger(__name__)

LINE_LIMIT = 16 * 1024 * 1024  # bytes of one message's line, either way; far above any real one
CLOSE_TIMEOUT = 10.0  # s a child gets to close its driver after its stdin closes

# Errors that cross the pipe by class name; any other name arrives as Refused.
ERRORS: dict[str, type[DriverError]] = {
    cls.__name__: cls
    for cls in (
        DriverError,
        Unreachable,
        DeviceTimeout,
        AuthFailed,
        NoSession,
        Unsupported,
        Refused,
        Busy,
        PoweredOff,
    )
}
_YIELD_EVERY = 64  # lines read from a child between yields to the other tasks

_ROOT = str(FilePath(__file__).resolve().parents[1])  # where `agents` is: the children import it
_LABELS = {"ipmi": "IPMI", "redfish": "Redfish"}


@dataclass(eq=False)
class _Call:
    future: asyncio.Future[PowerState | HealthData | None]
    status: bool  # a read: nothing was done if the child died under it


@dataclass(eq=False)
class _Child:
    process: asyncio.subprocess.Process
    pending: dict[int, _Call] = field(default_factory=dict)
    consoles: dict[str, _ConsoleProxy] = field(default_factory=dict)  # by session id
    outbox: list[bytes] = field(default_factory=list)
    alive: bool = True
    reader: asyncio.Task[None] | None = None

    def send(self, message: ToWorker) -> None:
        """Queue one message; a loop turn's messages go out in one write, a line each."""
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self.outbox.append(encode(message))

    def _flush(self) -> None:
        self.outbox.append(b"")  # the last line's newline
        data = b"\n".join(self.outbox)
        self.outbox.clear()
        stdin = self.process.stdin
        if self.alive and stdin is not None and not stdin.is_closing():
            stdin.write(data)  # buffered by the transport; bounded by the calls in flight


class _ConsoleProxy:
    """A console open in a child process (a `ConsoleChannel`); `reason` says why it ended."""

    def __init__(self, child: _Child, session_id: str, endpoint: str, label: str) -> None:
        self._child = child
        self._session_id = session_id
        self._endpoint = endpoint
        self._label = label
        self.output = OutputBuffer()
        self.ended = asyncio.Event()

    @property
    def reason(self) -> str | None:
        return self.output.reason

    @property
    def dropped(self) -> int:
        """Bytes of output dropped here because nobody read them in time."""
        return self.output.dropped

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.output.chunks()

    async def write(self, data: bytes) -> None:
        if data:
            self._send(ConsoleInput(self._session_id, data))

    async def send_break(self) -> None:
        self._send(ConsoleControl(self._session_id, ConsoleOp.BREAK))

    async def resize(self, cols: int, rows: int) -> None:
        self._send(ConsoleControl(self._session_id, ConsoleOp.RESIZE, cols, rows))

    async def close(self) -> None:
        """Ask the child to close it, and wait (bounded) until it says it has."""
        if self.output.reason is None:
            self._child.send(ConsoleControl(self._session_id, ConsoleOp.CLOSE))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ended.wait()
        self.end(CLOSED)

    def end(self, reason: str) -> None:
        self.output.end(reason)
        self.ended.set()

    def _send(self, message: ConsoleInput | ConsoleControl) -> None:
        if self.output.reason is not None:
            raise DriverError(f"the console of {self._endpoint} has ended ({self.reason})")
        if not self._child.alive:
            raise DriverError(f"the {self._label} worker process of {self._endpoint} exited")
        self._child.send(message)


class WorkerPool:
    """A driver (power, set_boot, open_console, close) whose calls run in child processes.

    `kind` names the driver each child runs ("ipmi", "redfish", "fake", or "module:Class"),
    `options` its keyword arguments (for IPMI each child gets its own `max_logins`). Children
    start on first use; one that dies fails the calls it held and is started again by the
    next call for it.
    """

    def __init__(
        self,
        kind: str = "ipmi",
        options: Mapping[str, Any] | None = None,
        *,
        processes: int | None = None,
    ) -> None:
        self._kind = kind
        self._options = orjson.dumps(dict(options or {})).decode()
        self._slots: list[_Child | None] = [None] * max(1, processes or os.cpu_count() or 1)
        self._starting = [asyncio.Lock() for _ in self._slots]
        self._ids = itertools.count()
        self._label = _LABELS.get(kind, kind)
        self._closed = False

    async def start(self) -> None:
        """Start every child and wait until each has loaded its driver.

        An agent does this when it starts, so that its first calls do not pay for starting
        processes and importing pyghmi (~0.25 s of CPU each) on top of the logins.
        """

        async def ready(slot: int) -> None:
            ping = DeviceCall(next(self._ids), WorkerOp.PING)
            await self._call(ping, status=True, child=await self._child(slot))

        await asyncio.gather(*(ready(slot) for slot in range(len(self._slots))))

    def pid(self, path: Path) -> int | None:
        """The process id of the child serving `path`'s endpoint, if it is running."""
        child = self._slots[self._slot(path)]
        return child.process.pid if child is not None and child.alive else None

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        call = DeviceCall(next(self._ids), WorkerOp.POWER, path, action=action)
        state = await self._call(call, status=action is PowerAction.STATUS)
        assert isinstance(state, PowerState)
        return state

    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        call = DeviceCall(next(self._ids), WorkerOp.BOOT, path, boot=device, persistent=persistent)
        await self._call(call, status=False)

    async def health(self, path: Path, read: HealthRead) -> HealthData:
        call = DeviceCall(next(self._ids), WorkerOp.HEALTH, path, read=read)
        data = await self._call(call, status=read is not HealthRead.CLEAR_EVENTS)
        assert isinstance(data, HealthData)
        return data

    async def open_console(
        self, path: ConsolePath, *, cols: int = 80, rows: int = 25
    ) -> _ConsoleProxy:
        """The device's console, opened in the child that serves its endpoint (as its power)."""
        if self._closed:
            raise DriverError(f"the {self._label} worker pool is closed")
        child = await self._child(self._slot(path))
        call = DeviceCall(next(self._ids), WorkerOp.CONSOLE_OPEN, path, cols=cols, rows=rows)
        session_id = str(call.call_id)
        proxy = child.consoles[session_id] = _ConsoleProxy(
            child, session_id, path.endpoint, self._label
        )
        try:
            await self._call(call, status=True, child=child)
        except BaseException:
            if child.consoles.pop(session_id, None) is not None and child.alive:
                child.send(ConsoleControl(session_id, ConsoleOp.CLOSE))  # if it opened
            proxy.end("did not open")
            raise
        return proxy

    async def close(self) -> None:
        """Close each child's stdin so it closes its driver and exits; kill it if it lingers.

        Calls still pending fail as if the child had died.
        """
        self._closed = True
        await asyncio.gather(*(self._stop(slot) for slot in range(len(self._slots))))

    def _slot(self, path: Path | ConsolePath) -> int:
        """Stable across runs and processes (unlike `hash`), so routing is reproducible."""
        return zlib.crc32(path.endpoint.encode()) % len(self._slots)

    async def _call(
        self, call: DeviceCall, *, status: bool, child: _Child | None = None
    ) -> PowerState | HealthData | None:
        """`call` in `child`, or else in the child serving its path; its answer's result."""
        if self._closed:
            raise DriverError(f"the {self._label} worker pool is closed")
        if child is None:
            assert call.path is not None
            child = await self._child(self._slot(call.path))
        future: asyncio.Future[PowerState | HealthData | None] = (
            asyncio.get_running_loop().create_future()
        )
        child.pending[call.call_id] = _Call(future, status)
        child.send(call)
        try:
            return await future
        except asyncio.CancelledError:
            if child.pending.pop(call.call_id, None) is not None:
                child.send(DeviceCall(call.call_id, WorkerOp.CANCEL))
            raise

    async def _child(self, slot: int) -> _Child:
        child = self._slots[slot]
        if child is not None and child.alive:
            return child
        async with self._starting[slot]:
            if self._closed:
                raise DriverError(f"the {self._label} worker pool is closed")
            child = self._slots[slot]
            if child is None or not child.alive:
                child = self._slots[slot] = await self._start()
            return child

    async def _start(self) -> _Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agents.worker",
            self._kind,
            self._options,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=_ROOT,
            limit=LINE_LIMIT,
        )
        child = _Child(process)
        child.reader = asyncio.create_task(self._read(child), name=f"worker-{process.pid}")
        return child

    async def _read(self, child: _Child) -> None:
        """Answers to futures until the child's stdout ends; then its pending calls fail."""
        stdout = child.process.stdout
        assert stdout is not None
        lines = 0
        try:
            while line := await stdout.readline():
                message = decode_worker(line)
                lines += 1
                if lines % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a chatty console must not hold up the loop
                if isinstance(message, DeviceAnswer):
                    self._answer(child, message)
                elif isinstance(message, ConsoleOutput | ConsoleClosed):
                    self._console_message(child, message)
                else:
                    raise ValueError(f"a {type(message).__name__} is no answer of a worker")
        except ValueError:
            log.exception(
                "the %s worker %d wrote garbage; stopping it", self._kind, child.process.pid
            )
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        finally:
            child.alive = False
            self._fail(child)
            for proxy in child.consoles.values():
                proxy.end(f"the {self._label} worker process exited")
            child.consoles.clear()
            if child.process.stdin is not None:
                child.process.stdin.close()  # or its pipe outlives a killed child
        code = await child.process.wait()
        if not self._closed:
            log.warning(
                "the %s worker %d exited (code %s); the next call for it starts a new one",
                self._kind,
                child.process.pid,
                code,
            )

    @staticmethod
    def _answer(child: _Child, answer: DeviceAnswer) -> None:
        call = child.pending.pop(answer.call_id, None)
        if call is None or call.future.done():
            return  # cancelled here meanwhile
        if answer.error is None:
            call.future.set_result(answer.state if answer.health is None else answer.health)
        else:
            call.future.set_exception(ERRORS.get(answer.error, Refused)(answer.message))

    @staticmethod
    def _console_message(child: _Child, message: ConsoleOutput | ConsoleClosed) -> None:
        proxy = child.consoles.get(message.session_id)
        if proxy is None:
            return  # closed here meanwhile
        if isinstance(message, ConsoleOutput):
            proxy.output.put(message.data)
        else:
            del child.consoles[message.session_id]
            proxy.end(message.message or message.reason)  # the child's words, or "closed"

    def _fail(self, child: _Child) -> None:
        gone = f"the {self._label} worker process exited"
        for call in child.pending.values():
            if call.future.done():
                continue
            if call.status:
                error: DriverError = Unreachable(f"{gone} before the device answered; try again")
            else:
                error = DeviceTimeout(
                    f"{gone}; the action may or may not have run; check the power status"
                )
            call.future.set_exception(error)
        child.pending.clear()

    async def _stop(self, slot: int) -> None:
        async with self._starting[slot]:  # a child being started is stopped once it is up
            child = self._slots[slot]
        if child is None:
            return
        if child.process.stdin is not None:
            child.process.stdin.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await child.process.wait()
        except TimeoutError:
            log.warning("the %s worker %d did not exit; killing it", self._kind, child.process.pid)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        if child.reader is not None:
            await child.reader
