"""The agent that runs inside the central's process, for every site without its own agent.

It receives the same order and report messages a remote agent will, round-tripped through
their wire encoding, so the in-process path cannot drift from the remote one.
"""

from __future__ import annotations

from collections.abc import Mapping

from agents.drivers.registry import default_drivers
from agents.protocol import Order, Report, decode, encode
from agents.runner import Driver, ReportSink, Runner


class BuiltinAgent:
    def __init__(self, sink: ReportSink, drivers: Mapping[str, Driver] | None = None) -> None:
        self._drivers = dict(drivers) if drivers is not None else default_drivers()
        self._sink = sink
        self._runner = Runner(self._drivers, self._receive)

    def submit(self, order: Order) -> None:
        message = decode(encode(order))
        assert not isinstance(message, Report)
        self._runner.submit(message)

    def cancel(self, task_id: str) -> bool:
        return self._runner.cancel(task_id)

    async def _receive(self, report: Report) -> None:
        message = decode(encode(report))
        assert isinstance(message, Report)
        await self._sink(message)

    async def close(self) -> None:
        await self._runner.close()
        for driver in self._drivers.values():
            close = getattr(driver, "close", None)
            if close is not None:
                await close()
