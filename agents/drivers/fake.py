"""A driver with machines in memory: for unit tests of the runner and the jobs, never a BMC.

Each endpoint is a machine whose answers can be scripted: a delay, an error to raise.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from agents.drivers.base import DriverError
from agents.protocol import BootDevice, Path, PowerAction, PowerState


@dataclass
class FakeMachine:
    power: PowerState = PowerState.OFF
    boot: BootDevice = BootDevice.DEFAULT
    persistent: bool = False
    delay: float = 0.0
    fail: DriverError | None = None
    actions: list[str] = field(default_factory=list)


class FakeDriver:
    def __init__(self) -> None:
        self.machines: dict[str, FakeMachine] = {}

    def machine(self, path: Path) -> FakeMachine:
        return self.machines.setdefault(path.endpoint, FakeMachine())

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        machine = await self._answer(path, action.value)
        if action in (PowerAction.ON, PowerAction.CYCLE, PowerAction.RESET):
            machine.power = PowerState.ON
        elif action in (PowerAction.OFF, PowerAction.SOFT):
            machine.power = PowerState.OFF
        return machine.power

    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        machine = await self._answer(path, f"boot {device}")
        machine.boot, machine.persistent = device, persistent

    async def _answer(self, path: Path, what: str) -> FakeMachine:
        machine = self.machine(path)
        if machine.delay:
            await asyncio.sleep(machine.delay)
        if machine.fail is not None:
            raise machine.fail
        machine.actions.append(what)
        return machine

    async def close(self) -> None:
        return None
