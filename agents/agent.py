"""The agent: device drivers, the runner and the console sessions behind one message interface.

The central's built-in agent and a site's remote agent are this class; only the link differs
(`app.fleetlink` hands it messages in-process, `agents.link` over a WebSocket). Messages come in
through `handle`; what the agent has to say goes out through the `send` it was built with.
Console output waits for credit (`Credit` messages), so a fast console never fills the link
ahead of a report; everything else goes out at once.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agents.consoles import ConsoleHub
from agents.drivers.base import OptionError
from agents.drivers.options import validate_path
from agents.drivers.registry import default_drivers
from agents.protocol import (
    Answer,
    BootOrder,
    Cancel,
    ConsoleClosed,
    ConsoleControl,
    ConsoleInput,
    ConsoleOpen,
    ConsoleOpened,
    ConsoleOutput,
    Credit,
    FromAgent,
    GuestsOrder,
    HealthOrder,
    HostKeySeen,
    PowerOrder,
    Report,
    SshTarget,
    ToAgent,
)
from agents.runner import Driver, Runner

# What the central may use of an agent besides its messages: the class itself, and the check
# of a path's options against what the drivers honour (made when a path is written).
__all__ = ["WINDOW", "Agent", "Driver", "OptionError", "Send", "validate_path", "version"]

Send = Callable[[FromAgent], Awaitable[None]]

WINDOW = 256 * 1024  # bytes of one console's output in flight before the central's credit
CHUNK = 16 * 1024  # bytes of console output per message: a report waits at most one behind it


def version() -> str:
    """This agent's software version, as its hello names it."""
    try:
        return importlib.metadata.version("rackhand")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class Credits:
    """Per console, the bytes of output the agent may still send before the central says more."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._left: dict[str, int] = {}
        self._more: dict[str, asyncio.Event] = {}

    def open(self, session_id: str) -> None:
        self._left[session_id] = self.window
        self._more[session_id] = asyncio.Event()

    async def take(self, session_id: str, size: int) -> None:
        """Wait until `size` bytes may go; a console that is not open waits for nothing."""
        while (left := self._left.get(session_id)) is not None and left < size:
            event = self._more[session_id]
            event.clear()
            await event.wait()
        if session_id in self._left:
            self._left[session_id] -= size

    def grant(self, session_id: str, size: int) -> None:
        if session_id in self._left:
            self._left[session_id] += size
            self._more[session_id].set()

    def forget(self, session_id: str) -> None:
        self._left.pop(session_id, None)
        event = self._more.pop(session_id, None)
        if event is not None:
            event.set()


class Agent:
    """Runs the orders and consoles it is handed; reports and console traffic go to `send`.

    `drivers` replaces the device drivers (tests use the fake one); by default IPMI runs in
    worker processes, Redfish on a thread pool, SSH devices on asyncio.
    """

    def __init__(
        self, send: Send, drivers: Mapping[str, Any] | None = None, *, window: int = WINDOW
    ) -> None:
        self._send = send
        self._tasks: set[asyncio.Future[None]] = set()
        self._drivers = dict(drivers) if drivers is not None else default_drivers(self._host_key)
        self._runner = Runner(self._drivers, self._report, self._report)
        self._consoles = ConsoleHub(self._drivers, self._console)
        self._credits = Credits(window)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The path kinds this agent's drivers handle, as its hello names them."""
        return tuple(sorted(self._drivers))

    @property
    def tasks(self) -> int:
        return self._runner.running

    @property
    def consoles(self) -> int:
        return self._consoles.count

    def resize_window(self, window: int) -> None:
        """The window the central's welcome named (consoles opened from now on)."""
        self._credits.window = max(window, CHUNK)

    async def start(self) -> None:
        """Start the drivers' worker processes now rather than at the first call."""
        for driver in self._drivers.values():
            start = getattr(driver, "start", None)
            if start is not None:
                await start()

    def handle(self, message: ToAgent) -> None:
        """One message from the central."""
        if isinstance(message, PowerOrder | BootOrder | GuestsOrder | HealthOrder):
            self._runner.submit(message)
        elif isinstance(message, Cancel):
            self._runner.cancel(message.task_id)
        elif isinstance(message, Credit):
            self._credits.grant(message.session_id, message.size)
        elif isinstance(message, ConsoleOpen | ConsoleInput | ConsoleControl):
            self._consoles.handle(message)
        else:
            raise TypeError(f"{type(message).__name__} goes from an agent, not to one")

    async def drop_all(self) -> None:
        """The link to the central is gone: stop every task and console. The central has ended
        them already (`lost`, or re-sent elsewhere), so nothing of them is reported later."""
        send, self._send = self._send, _discard
        try:
            await self._consoles.close()
            await self._runner.close()
        finally:
            self._send = send

    async def close(self) -> None:
        await self._consoles.close()
        await self._runner.close()
        for driver in self._drivers.values():
            close = getattr(driver, "close", None)
            if close is not None:
                await close()

    def _host_key(self, target: SshTarget, fingerprint: str) -> None:
        seen = HostKeySeen(target.address, target.port, fingerprint)
        task = asyncio.ensure_future(self._send(seen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(self, report: Report | Answer) -> None:
        await self._send(report)

    async def _console(self, message: FromAgent) -> None:
        if isinstance(message, ConsoleOutput):
            data = message.data
            for start in range(0, len(data), CHUNK):
                chunk = data[start : start + CHUNK]
                await self._credits.take(message.session_id, len(chunk))
                await self._send(ConsoleOutput(message.session_id, chunk))
            return
        if isinstance(message, ConsoleOpened):
            self._credits.open(message.session_id)
        elif isinstance(message, ConsoleClosed):
            self._credits.forget(message.session_id)
        await self._send(message)


async def _discard(_: FromAgent) -> None:
    return None
