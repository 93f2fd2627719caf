"""A `WorkerPool` child: `python -m agents.worker KIND OPTIONS_JSON` (see agents/workers.py).

One driver, built as `KIND(**OPTIONS)`. Both pipes carry agents.protocol messages, `encode`d,
one per line. stdin brings `DeviceCall`s (ping, power, boot, console_open, cancel); each call
runs as its own task, and stdout takes one `DeviceAnswer` per call: its state, or the class name
and message of the `DriverError` it raised. A cancelled call gets no answer. An open console
(its session id is its open call's id) takes `ConsoleInput` and `ConsoleControl` (break, resize,
close), in order, and sends `ConsoleOutput` (what came since the last, one per loop turn) and
finally `ConsoleClosed`: reason "closed" if it was closed as asked, else "device" and why. The
child ends when stdin ends (its parent closed it or died), after closing its consoles and the
driver. stdin and stdout must be pipes, as the pool makes.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import uvloop

from agents import collector
from agents.drivers.base import ConsoleChannel, DriverError
from agents.drivers.buffer import CLOSED
from agents.protocol import (
    CloseReason,
    ConsoleClosed,
    ConsoleControl,
    ConsoleInput,
    ConsoleOp,
    ConsoleOutput,
    ConsolePortPath,
    DeviceAnswer,
    DeviceCall,
    FromWorker,
    HealthData,
    Path,
    PowerState,
    WorkerOp,
    decode_worker,
    encode,
)
from agents.runner import Driver
from agents.workers import LINE_LIMIT

log = logging.getLogger("agents.worker")

KINDS = {
    "ipmi": "agents.drivers.ipmi:IpmiDriver",
    "redfish": "agents.drivers.redfish:RedfishDriver",
    "fake": "agents.drivers.fake:FakeDriver",
}


class ClosableDriver(Driver, Protocol):
    async def close(self) -> None: ...


def driver_class(kind: str) -> Callable[..., ClosableDriver]:
    """A kind of `KINDS`, or "module:Class" for a driver defined elsewhere (tests, plugins)."""
    module, _, name = KINDS.get(kind, kind).partition(":")
    factory: Callable[..., ClosableDriver] = getattr(importlib.import_module(module), name)
    return factory


class _Output(asyncio.Protocol):
    """The answer pipe; `done` once everything written has gone out and the pipe is closed."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Console:
    """An open console of this child: its channel, its input in order, its output pump."""

    def __init__(self, channel: ConsoleChannel) -> None:
        self.channel = channel
        self.input: asyncio.Queue[ConsoleInput | ConsoleControl] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []


class Worker:
    def __init__(self, driver: ClosableDriver, out: asyncio.WriteTransport) -> None:
        self._driver = driver
        self._out = out
        self._outbox: list[bytes] = []
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._consoles: dict[str, _Console] = {}  # by session id

    def handle(self, line: bytes) -> None:
        """Start the call a line brings, cancel the one it names, or pass console input on."""
        message = decode_worker(line)
        if isinstance(message, ConsoleInput | ConsoleControl):
            console = self._consoles.get(message.session_id)
            if console is not None:  # else it has ended: its ConsoleClosed is on its way
                console.input.put_nowait(message)
            return
        if not isinstance(message, DeviceCall):
            raise ValueError(f"a {type(message).__name__} is no call for a worker")
        call_id = message.call_id
        if message.op is WorkerOp.CANCEL:
            task = self._tasks.get(call_id)
            if task is not None:
                task.cancel()
            return
        task = asyncio.create_task(self._run(message))
        self._tasks[call_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(call_id, None))

    async def close(self) -> None:
        """Cancel what is in flight (nobody waits for it any more), close consoles and driver."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for session_id, console in self._consoles.items():
            console.input.put_nowait(ConsoleControl(session_id, ConsoleOp.CLOSE))
        pumps = [task for console in self._consoles.values() for task in console.tasks]
        await asyncio.gather(*pumps, return_exceptions=True)
        await self._driver.close()
        self._flush()

    async def _run(self, call: DeviceCall) -> None:
        answer: DeviceAnswer
        try:
            state = await self._call(call)
        except DriverError as exc:
            answer = DeviceAnswer(call.call_id, error=type(exc).__name__, message=str(exc))
        except Exception as exc:  # a bug must still answer, or the caller waits forever
            log.exception("call %s failed unexpectedly", call.call_id)
            text = f"internal error in the worker process: {type(exc).__name__}: {exc}"
            answer = DeviceAnswer(call.call_id, error=type(exc).__name__, message=text)
        else:
            if isinstance(state, HealthData):
                answer = DeviceAnswer(call.call_id, health=state)
            else:
                answer = DeviceAnswer(call.call_id, state)
        self._send(answer)

    def _send(self, message: FromWorker) -> None:
        """Queue a message; a loop turn's messages go out in one write, a line each."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(encode(message))

    async def _call(self, call: DeviceCall) -> PowerState | HealthData | None:
        if call.op is WorkerOp.PING:  # the pool asks whether the driver is loaded
            return None
        if call.op is WorkerOp.CONSOLE_OPEN:
            opener = getattr(self._driver, "open_console", None)
            if opener is None:
                raise DriverError(f"the {type(self._driver).__name__} driver has no consoles")
            channel = await opener(call.path, cols=call.cols, rows=call.rows)
            self._start_console(str(call.call_id), channel)
            return None
        path = _device_path(call)
        if call.op is WorkerOp.POWER and call.action is not None:
            return await self._driver.power(path, call.action)
        if call.op is WorkerOp.BOOT and call.boot is not None:
            await self._driver.set_boot(path, call.boot, call.persistent)
            return None
        if call.op is WorkerOp.HEALTH and call.read is not None:
            health = getattr(self._driver, "health", None)
            if health is None:
                raise DriverError(f"the {type(self._driver).__name__} driver reads no health")
            data: HealthData = await health(path, call.read)
            return data
        raise DriverError(f"a {call.op} call the worker process cannot make: {call!r}")

    def _start_console(self, session_id: str, channel: ConsoleChannel) -> None:
        """Its pump and its input start after the open answer is queued (same loop turn)."""
        console = self._consoles[session_id] = _Console(channel)
        console.tasks = [
            asyncio.create_task(self._pump(session_id, console)),
            asyncio.create_task(self._feed(console)),
        ]

    async def _pump(self, session_id: str, console: _Console) -> None:
        """Output in messages, one per turn at most (what arrived since is joined); then closed."""
        closed = ConsoleClosed(session_id, CloseReason.CLOSED)
        try:
            async for data in console.channel:
                self._send(ConsoleOutput(session_id, data))
                await asyncio.sleep(0)  # the other consoles and the answers get their turn
        except Exception as exc:  # a bug here must still end the console in the parent
            log.exception("console %s failed", session_id)
            text = f"internal error in the worker process: {type(exc).__name__}: {exc}"
            closed = ConsoleClosed(session_id, CloseReason.DEVICE, text)
        else:
            reason = getattr(console.channel, "reason", None) or CLOSED
            if reason != CLOSED:
                closed = ConsoleClosed(session_id, CloseReason.DEVICE, reason)
        finally:
            self._consoles.pop(session_id, None)
            console.tasks[1].cancel()
        self._send(closed)

    async def _feed(self, console: _Console) -> None:
        """Input in the order it came; `close` last, and it ends the output (so the pump)."""
        channel = console.channel
        while True:
            message = await console.input.get()
            try:
                if isinstance(message, ConsoleInput):
                    await channel.write(message.data)
                elif message.op is ConsoleOp.BREAK:
                    await channel.send_break()
                elif message.op is ConsoleOp.RESIZE:
                    await channel.resize(message.cols, message.rows)
                else:
                    await channel.close()
                    return
            except DriverError as exc:  # it ended meanwhile; the pump says why
                log.info("console input dropped: %s", exc)

    def _flush(self) -> None:
        """One write per loop turn for all the messages that turn produced (none once the
        parent has gone: nobody reads them)."""
        if self._out.is_closing():
            self._outbox.clear()
            return
        self._outbox.append(b"")  # the last line's newline
        self._out.write(b"\n".join(self._outbox))
        self._outbox.clear()


def _device_path(call: DeviceCall) -> Path:
    """The path a power or boot call acts on (a console port has no power)."""
    if call.path is None or isinstance(call.path, ConsolePortPath):
        raise DriverError(f"a {call.op} call needs a power path, not {call.path!r}")
    return call.path


async def serve(kind: str, options: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    # Answers get a private copy of stdout; fd 1 becomes stderr, so a stray print cannot
    # corrupt the answer stream.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    out, output = await loop.connect_write_pipe(_Output, answers)
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    worker = Worker(driver_class(kind)(**options), out)
    collector.tune()
    try:
        while line := await reader.readline():
            worker.handle(line)
    finally:
        await worker.close()
        out.close()  # once the last answers are written
        await output.done


def main() -> None:
    kind, options = sys.argv[1], orjson.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {kind} worker %(process)d %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the parent's to handle
    uvloop.run(serve(kind, options))  # the loop uvicorn gives the central: a cheaper pipe


if __name__ == "__main__":
    main()
