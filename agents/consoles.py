"""The agent's console sessions: open along the device's paths, pump bytes, obey controls.

The agent holds the device session (a BMC allows one SOL session, console servers limit
theirs); the central fans the output out to viewers and records it. Output is forwarded as it
arrives, one message per chunk the transport delivered, so nothing waits for a buffer to fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from agents.drivers.base import Busy, ConsoleChannel, DriverError, require_secret
from agents.protocol import (
    CloseReason,
    ConsoleClosed,
    ConsoleControl,
    ConsoleInput,
    ConsoleOp,
    ConsoleOpen,
    ConsoleOpened,
    ConsoleOutput,
    ConsolePath,
    FromAgent,
    PathKind,
)

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 20.0  # s for one path to connect and attach
CLOSE_TIMEOUT = 5.0
_NAMES: dict[str, str] = {
    PathKind.IPMI: "IPMI SOL",
    PathKind.CONSOLE_PORT: "console server port",
    PathKind.LIBVIRT: "guest serial console",
}

Sink = Callable[[FromAgent], Awaitable[None]]


class ConsoleOpener(Protocol):
    async def open_console(
        self, path: ConsolePath, *, cols: int = 80, rows: int = 25
    ) -> ConsoleChannel: ...


class _Live:
    def __init__(self, channel: ConsoleChannel, path: ConsolePath) -> None:
        self.channel = channel
        self.path = path
        self.pump: asyncio.Task[None] | None = None
        self.inbox: asyncio.Queue[ConsoleInput | ConsoleControl] = asyncio.Queue()
        self.writer: asyncio.Task[None] | None = None
        self.closing = False


class ConsoleHub:
    """All console sessions of one agent, keyed by the central's session id."""

    def __init__(self, drivers: Mapping[str, object], sink: Sink) -> None:
        self._drivers = drivers
        self._sink = sink
        self._live: dict[str, _Live] = {}
        self._opening: dict[str, asyncio.Task[None]] = {}

    @property
    def count(self) -> int:
        """Console sessions open or opening."""
        return len(self._live) + len(self._opening)

    def handle(self, message: ConsoleOpen | ConsoleInput | ConsoleControl) -> None:
        if isinstance(message, ConsoleOpen):
            task = asyncio.create_task(self._open(message), name=f"console-{message.session_id}")
            self._opening[message.session_id] = task
            task.add_done_callback(lambda _: self._opening.pop(message.session_id, None))
            return
        live = self._live.get(message.session_id)
        if live is not None:
            live.inbox.put_nowait(message)
        elif isinstance(message, ConsoleControl) and message.op is ConsoleOp.CLOSE:
            opening = self._opening.get(message.session_id)
            if opening is not None:
                opening.cancel()

    async def close(self) -> None:
        for task in list(self._opening.values()):
            task.cancel()
        await asyncio.gather(*self._opening.values(), return_exceptions=True)
        await asyncio.gather(
            *(
                self._end(sid, CloseReason.CLOSED, "the agent is stopping")
                for sid in list(self._live)
            )
        )

    async def _open(self, order: ConsoleOpen) -> None:
        failures: list[str] = []
        for path in order.paths:
            driver = self._drivers.get(path.kind)
            if not hasattr(driver, "open_console"):
                failures.append(f"{_NAMES.get(path.kind, path.kind)}: this agent has no driver")
                continue
            opener: ConsoleOpener = driver
            try:
                require_secret(path)
                async with asyncio.timeout(OPEN_TIMEOUT):
                    channel = await opener.open_console(path, cols=order.cols, rows=order.rows)
            except TimeoutError:
                failures.append(f"{path.endpoint} did not attach within {OPEN_TIMEOUT:g} s")
                continue
            except asyncio.CancelledError:
                await self._sink(
                    ConsoleClosed(order.session_id, CloseReason.CLOSED, "closed while opening")
                )
                raise
            except Busy as exc:  # the port is someone else's: another path would not help
                await self._sink(ConsoleClosed(order.session_id, CloseReason.BUSY, str(exc)))
                return
            except DriverError as exc:
                failures.append(str(exc))
                continue
            await self._started(order, path, channel, failures)
            return
        message = "; ".join(failures) or f"{order.device} has no console path"
        await self._sink(ConsoleClosed(order.session_id, CloseReason.FAILED, message))

    async def _started(
        self, order: ConsoleOpen, path: ConsolePath, channel: ConsoleChannel, failures: list[str]
    ) -> None:
        live = self._live[order.session_id] = _Live(channel, path)
        note = f" (after: {'; '.join(failures)})" if failures else ""
        await self._sink(
            ConsoleOpened(
                order.session_id,
                path.kind,
                path.endpoint,
                f"{_NAMES.get(path.kind, path.kind)}{note}",
            )
        )
        live.pump = asyncio.create_task(self._pump(order.session_id, live))
        live.writer = asyncio.create_task(self._obey(order.session_id, live))

    async def _pump(self, session_id: str, live: _Live) -> None:
        reason, message = CloseReason.DEVICE, "the device closed the console"
        try:
            async for data in live.channel:
                await self._sink(ConsoleOutput(session_id, data))
        except DriverError as exc:
            message = str(exc)
        except Exception as exc:  # a transport bug ends this console, never the agent
            log.exception("console %s failed", session_id)
            message = f"the console transport failed: {type(exc).__name__}: {exc}"
        if not live.closing:
            await self._end(session_id, reason, message)

    async def _obey(self, session_id: str, live: _Live) -> None:
        while True:
            message = await live.inbox.get()
            try:
                if isinstance(message, ConsoleInput):
                    await live.channel.write(message.data)
                elif message.op is ConsoleOp.BREAK:
                    await live.channel.send_break()
                elif message.op is ConsoleOp.RESIZE:
                    await live.channel.resize(message.cols, message.rows)
                else:
                    await self._end(session_id, CloseReason.CLOSED, "closed by the central")
                    return
            except DriverError as exc:
                await self._end(session_id, CloseReason.DEVICE, str(exc))
                return

    async def _end(self, session_id: str, reason: CloseReason, message: str) -> None:
        live = self._live.pop(session_id, None)
        if live is None:
            return
        live.closing = True
        current = asyncio.current_task()
        for task in (live.writer, live.pump):
            if task is not None and task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await live.channel.close()
        await self._sink(ConsoleClosed(session_id, reason, message))
