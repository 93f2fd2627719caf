"""A `WorkerPool` child: `python -m agents.worker KIND OPTIONS_JSON` (see agents/workers.py).

One driver, built as `KIND(**OPTIONS)`; stdin brings JSON lines ({"id", "op": "ping" | "power"
| "boot" | "console_open" | "cancel", ...}), each call runs as its own task, and stdout takes one
line per answer: {"id", "state"} or {"id", "error": class name, "message"}. A cancelled call gets no
answer. An open console (its id is its open call's) takes {"op": "console_write", "console",
"data": base64}, "console_break", "console_resize" and "console_close", in order, and sends
{"console", "data": base64} lines (what came since the last, one per loop turn) and finally
{"console", "closed": reason}. The child ends when stdin ends (its parent closed it or died),
after closing its consoles and the driver. stdin and stdout must be pipes, as the pool makes.
"""

from __future__ import annotations

import asyncio
import base64
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
from agents.protocol import BootDevice, IpmiPath, PowerAction, PowerState, RedfishPath
from agents.runner import Driver
from agents.workers import LINE_LIMIT

log = logging.getLogger("agents.worker")

KINDS = {
    "ipmi": "agents.drivers.ipmi:IpmiDriver",
    "redfish": "agents.drivers.redfish:RedfishDriver",
    "fake": "agents.drivers.fake:FakeDriver",
}
_PATHS: dict[str, type[IpmiPath | RedfishPath]] = {"ipmi": IpmiPath, "redfish": RedfishPath}


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
        self.input: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []


class Worker:
    def __init__(self, driver: ClosableDriver, out: asyncio.WriteTransport) -> None:
        self._driver = driver
        self._out = out
        self._outbox: list[bytes] = []
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._consoles: dict[int, _Console] = {}

    def handle(self, line: bytes) -> None:
        """Start the call a line brings, cancel the one it names, or pass console input on."""
        message = orjson.loads(line)
        if message["op"].startswith("console_") and message["op"] != "console_open":
            console = self._consoles.get(message["console"])
            if console is not None:  # else it has ended: its "closed" line is on its way
                console.input.put_nowait(message)
            return
        call_id: int = message["id"]
        if message["op"] == "cancel":
            task = self._tasks.get(call_id)
            if task is not None:
                task.cancel()
            return
        task = asyncio.create_task(self._run(call_id, message))
        self._tasks[call_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(call_id, None))

    async def close(self) -> None:
        """Cancel what is in flight (nobody waits for it any more), close consoles and driver."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for console in self._consoles.values():
            console.input.put_nowait({"op": "console_close"})
        pumps = [task for console in self._consoles.values() for task in console.tasks]
        await asyncio.gather(*pumps, return_exceptions=True)
        await self._driver.close()
        self._flush()

    async def _run(self, call_id: int, message: dict[str, Any]) -> None:
        answer: dict[str, Any]
        try:
            state = await self._call(message)
        except DriverError as exc:
            answer = {"id": call_id, "error": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # a bug must still answer, or the caller waits forever
            log.exception("call %s failed unexpectedly", call_id)
            text = f"internal error in the worker process: {type(exc).__name__}: {exc}"
            answer = {"id": call_id, "error": type(exc).__name__, "message": text}
        else:
            answer = {"id": call_id, "state": state}
        self._send(answer)

    def _send(self, line: dict[str, Any]) -> None:
        """Queue a line; a loop turn's lines go out in one write."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))

    async def _call(self, message: dict[str, Any]) -> PowerState | None:
        if message["op"] == "ping":  # the pool asks whether the driver is loaded
            return None
        fields = message["path"]
        path = _PATHS[fields["kind"]](**fields)
        if message["op"] == "console_open":
            opener = getattr(self._driver, "open_console", None)
            if opener is None:
                raise DriverError(f"the {type(self._driver).__name__} driver has no consoles")
            channel = await opener(path, cols=message["cols"], rows=message["rows"])
            self._start_console(message["id"], channel)
            return None
        if message["op"] == "power":
            return await self._driver.power(path, PowerAction(message["action"]))
        device = BootDevice(message["device"])
        await self._driver.set_boot(path, device, bool(message["persistent"]))
        return None

    def _start_console(self, console_id: int, channel: ConsoleChannel) -> None:
        """Its pump and its input start after the open answer is queued (same loop turn)."""
        console = self._consoles[console_id] = _Console(channel)
        console.tasks = [
            asyncio.create_task(self._pump(console_id, console)),
            asyncio.create_task(self._feed(console)),
        ]

    async def _pump(self, console_id: int, console: _Console) -> None:
        """Output to lines, one per turn at most (what arrived since is joined); then closed."""
        try:
            async for data in console.channel:
                self._send({"console": console_id, "data": base64.b64encode(data).decode()})
                await asyncio.sleep(0)  # the other consoles and the answers get their turn
        except Exception as exc:  # a bug here must still end the console in the parent
            log.exception("console %s failed", console_id)
            reason = f"internal error in the worker process: {type(exc).__name__}: {exc}"
        else:
            reason = getattr(console.channel, "reason", None) or CLOSED
        finally:
            self._consoles.pop(console_id, None)
            console.tasks[1].cancel()
        self._send({"console": console_id, "closed": reason})

    async def _feed(self, console: _Console) -> None:
        """Input in the order it came; `close` last, and it ends the output (so the pump)."""
        channel = console.channel
        while True:
            message = await console.input.get()
            op = message["op"]
            try:
                if op == "console_write":
                    await channel.write(base64.b64decode(message["data"]))
                elif op == "console_break":
                    await channel.send_break()
                elif op == "console_resize":
                    await channel.resize(message["cols"], message["rows"])
                elif op == "console_close":
                    await channel.close()
                    return
            except DriverError as exc:  # it ended meanwhile; the pump says why
                log.info("console input dropped: %s", exc)

    def _flush(self) -> None:
        """One write per loop turn for all the answers that turn produced."""
        self._out.write(b"".join(self._outbox))
        self._outbox.clear()


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
