"""The agent that runs inside the central's process, for every site without its own agent.

It receives the same messages a remote agent will, round-tripped through their wire encoding,
so the in-process path cannot drift from the remote one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from agents.consoles import ConsoleHub
from agents.drivers.registry import default_drivers
from agents.protocol import (
    BootOrder,
    ConsoleControl,
    ConsoleInput,
    ConsoleOpen,
    FromAgent,
    HostKeySeen,
    Order,
    PowerOrder,
    Report,
    SshTarget,
    ToAgent,
    decode,
    encode,
)
from agents.runner import Driver, Runner

Sink = Callable[[FromAgent], Awaitable[None]]


class BuiltinAgent:
    def __init__(self, sink: Sink, drivers: Mapping[str, Driver] | None = None) -> None:
        self._sink = sink
        self._tasks: set[asyncio.Task[None]] = set()
        self._drivers = dict(drivers) if drivers is not None else default_drivers(self._host_key)
        self._runner = Runner(self._drivers, self._report)
        self._consoles = ConsoleHub(self._drivers, self._receive)

    async def start(self) -> None:
        """Start the drivers' worker processes now rather than at the first call."""
        for driver in self._drivers.values():
            start = getattr(driver, "start", None)
            if start is not None:
                await start()

    def submit(self, order: Order) -> None:
        self.send(order)

    def send(self, message: ToAgent) -> None:
        """Hand a message to the agent (an order, or console input and controls)."""
        received = decode(encode(message))
        if isinstance(received, PowerOrder | BootOrder):
            self._runner.submit(received)
        elif isinstance(received, ConsoleOpen | ConsoleInput | ConsoleControl):
            self._consoles.handle(received)
        else:
            raise TypeError(f"{type(received).__name__} goes from an agent, not to one")

    def cancel(self, task_id: str) -> bool:
        return self._runner.cancel(task_id)

    def _host_key(self, target: SshTarget, fingerprint: str) -> None:
        seen = HostKeySeen(target.address, target.port, fingerprint)
        task = asyncio.get_running_loop().create_task(self._receive(seen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(self, report: Report) -> None:
        await self._receive(report)

    async def _receive(self, message: FromAgent) -> None:
        received = decode(encode(message))
        assert not isinstance(received, ToAgent)
        await self._sink(received)

    async def close(self) -> None:
        await self._consoles.close()
        await self._runner.close()
        for driver in self._drivers.values():
            close = getattr(driver, "close", None)
            if close is not None:
                await close()
