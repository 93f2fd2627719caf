"""A driver with machines in memory: for unit tests of the runner and the jobs, never a BMC.

Each endpoint is a machine whose answers can be scripted: a delay, an error to raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agents.drivers.base import DriverError, OutletReading, PoweredOff
from agents.protocol import (
    BootDevice,
    ConsolePath,
    Fru,
    Guest,
    HealthData,
    HealthRead,
    HostPath,
    LogEvent,
    Path,
    PduOutletPath,
    PowerAction,
    PowerState,
    Sensor,
)


@dataclass(eq=False)
class FakeConsole:
    """A console that echoes what is typed; `hangup` in the input makes the device hang up."""

    banner: bytes = b""
    hangup: bytes = b"\x04\x04"
    written: list[bytes] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    breaks: int = 0
    closed: bool = False
    _output: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        if self.banner:
            self._output.put_nowait(self.banner)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (data := await self._output.get()) is not None:
            yield data

    async def write(self, data: bytes) -> None:
        self.written.append(data)
        self._output.put_nowait(None if self.hangup in data else data)

    async def send_break(self) -> None:
        self.breaks += 1

    async def resize(self, cols: int, rows: int) -> None:
        self.sizes.append((cols, rows))

    async def close(self) -> None:
        self.closed = True
        self._output.put_nowait(None)


@dataclass
class FakeMachine:
    power: PowerState = PowerState.OFF
    boot: BootDevice = BootDevice.DEFAULT
    persistent: bool = False
    delay: float = 0.0
    fail: DriverError | None = None
    actions: list[str] = field(default_factory=list)
    banner: bytes = b""  # what a console prints as it opens
    outlets_on: set[int] = field(default_factory=set)  # a PDU's outlets that have AC
    consoles: list[FakeConsole] = field(default_factory=list)
    sensors: list[Sensor] = field(default_factory=list)
    events: list[LogEvent] = field(default_factory=list)  # oldest first, as a BMC keeps them
    inventory: list[Fru] = field(default_factory=list)


class FakeDriver:
    def __init__(self) -> None:
        self.machines: dict[str, FakeMachine] = {}
        self.hosts: dict[str, list[Guest]] = {}  # a hypervisor's endpoint → its domains

    def machine(self, path: Path | ConsolePath | HostPath) -> FakeMachine:
        return self.machines.setdefault(path.endpoint, FakeMachine())

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        machine = self.machine(path)
        if action in (PowerAction.CYCLE, PowerAction.RESET) and machine.power is PowerState.OFF:
            raise PoweredOff(f"{path.endpoint}: the machine is off; {action} was not sent")
        machine = await self._answer(path, action.value)
        if action in (PowerAction.ON, PowerAction.CYCLE, PowerAction.RESET):
            machine.power = PowerState.ON
        elif action in (PowerAction.OFF, PowerAction.SOFT):
            machine.power = PowerState.OFF
        return machine.power

    async def switch(self, path: PduOutletPath, action: PowerAction) -> OutletReading:
        """A PDU's outlets: `on` and `off` send (and record) nothing when already so."""
        machine = self.machine(path)
        mine = frozenset(path.outlets)
        before = mine & machine.outlets_on
        wanted = {PowerAction.ON: True, PowerAction.OFF: False}.get(action)
        if action is PowerAction.STATUS or (
            wanted is not None and all((n in before) is wanted for n in path.outlets)
        ):
            await self._answer(path, PowerAction.STATUS)
            return OutletReading(path.outlets, before, before, sent=False)
        await self._answer(path, action.value)
        if wanted is False:
            machine.outlets_on -= set(path.outlets)
        else:
            machine.outlets_on |= set(path.outlets)
        return OutletReading(path.outlets, before, mine & machine.outlets_on, sent=True)

    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        machine = await self._answer(path, f"boot {device}")
        machine.boot, machine.persistent = device, persistent

    async def open_console(
        self, path: ConsolePath, *, cols: int = 80, rows: int = 25
    ) -> FakeConsole:
        machine = await self._answer(path, "console")
        console = FakeConsole(banner=machine.banner)
        machine.consoles.append(console)
        return console

    async def guests(self, host: HostPath) -> list[Guest]:
        await self._answer(host, "guests")
        return list(self.hosts.get(host.endpoint, []))

    async def health(self, path: Path, read: HealthRead) -> HealthData:
        machine = await self._answer(path, f"health {read}")
        newest_first = tuple(reversed(machine.events))
        if read is HealthRead.SENSORS:
            return HealthData(sensors=tuple(machine.sensors))
        if read is HealthRead.INVENTORY:
            return HealthData(inventory=tuple(machine.inventory))
        if read is HealthRead.CLEAR_EVENTS:
            machine.events.clear()
        return HealthData(events=newest_first)

    async def _answer(self, path: Path | ConsolePath | HostPath, what: str) -> FakeMachine:
        machine = self.machine(path)
        if machine.delay:
            await asyncio.sleep(machine.delay)
        if machine.fail is not None:
            raise machine.fail
        machine.actions.append(what)
        return machine

    async def close(self) -> None:
        return None
