"""WorkerPool: driver calls in child processes, with the fake driver and against simulated BMCs.

The children of most tests run `ScriptedDriver` below (as "tests.agents.test_workers:
ScriptedDriver"), whose behaviour is chosen by the path's username, since the test cannot reach
into another process to script a machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from agents.drivers.base import DeviceTimeout, DriverError, Refused, Unreachable
from agents.drivers.fake import FakeDriver
from agents.protocol import (
    BootDevice,
    GuestPath,
    IpmiPath,
    Path,
    PduOutletPath,
    PowerAction,
    PowerState,
)
from agents.workers import ERRORS, WorkerPool
from tests.sim.fleet import PASSWORD, launch

T = TypeVar("T")

SCRIPTED = "tests.agents.test_workers:ScriptedDriver"


def _user(path: Path) -> str:
    if isinstance(path, GuestPath):
        return path.host.ssh.username
    return path.pdu.username if isinstance(path, PduOutletPath) else path.username


class ScriptedDriver(FakeDriver):
    """FakeDriver, except for usernames: "sleep" never answers (and notes being cancelled),
    "cancelled?" answers on if the endpoint's sleep was cancelled, "raise:Name" raises Name."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled: set[str] = set()

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        await self._script(path)
        if _user(path) == "cancelled?":
            return PowerState.ON if path.endpoint in self.cancelled else PowerState.OFF
        return await super().power(path, action)

    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        await self._script(path)
        await super().set_boot(path, device, persistent)

    async def _script(self, path: Path) -> None:
        if _user(path) == "sleep":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.add(path.endpoint)
                raise
        name = _user(path).removeprefix("raise:")
        if name in ERRORS:
            raise ERRORS[name](f"{name} from {path.endpoint}")
        if name == "ValueError":
            raise ValueError("a bug in the driver")


def bmc(port: int, username: str = "admin") -> IpmiPath:
    return IpmiPath("127.0.0.1", username, "pw", port=port)


def run(scenario: Callable[[WorkerPool], Awaitable[T]], kind: str = SCRIPTED, **options: int) -> T:
    """`scenario` on a new 2-process pool; the pool closed whatever happens; bounded in time."""

    async def main() -> T:
        pool = WorkerPool(kind, options, processes=2)
        try:
            async with asyncio.timeout(30):
                return await scenario(pool)
        finally:
            async with asyncio.timeout(15):
                await pool.close()

    return asyncio.run(main())


def test_the_fake_driver_answers_through_the_children() -> None:
    async def scenario(pool: WorkerPool) -> None:
        assert await pool.power(bmc(1), PowerAction.STATUS) is PowerState.OFF
        assert await pool.power(bmc(1), PowerAction.ON) is PowerState.ON
        assert await pool.power(bmc(1), PowerAction.SOFT) is PowerState.OFF
        await pool.set_boot(bmc(1), BootDevice.PXE, persistent=True)

    run(scenario, kind="fake")


def test_an_endpoint_stays_in_one_child() -> None:
    """The fake's machines live in the child: on, then status, is on only in the same child."""
    ports = range(1, 41)

    async def scenario(pool: WorkerPool) -> None:
        await asyncio.gather(*(pool.power(bmc(port), PowerAction.ON) for port in ports[::2]))
        pids = {pool.pid(bmc(port)) for port in ports}
        states = await asyncio.gather(*(pool.power(bmc(p), PowerAction.STATUS) for p in ports))
        assert states == [PowerState.ON, PowerState.OFF] * 20
        assert len(pids) == 2  # both children serve some of the endpoints
        assert pool.pid(bmc(7, "someone else")) == pool.pid(bmc(7))  # the endpoint decides

    run(scenario, kind="fake")


def test_each_driver_error_crosses_with_its_class_and_message() -> None:
    async def scenario(pool: WorkerPool) -> None:
        for port, name in enumerate(ERRORS):
            with pytest.raises(ERRORS[name]) as raised:
                await pool.power(bmc(port, f"raise:{name}"), PowerAction.CYCLE)
            assert type(raised.value) is ERRORS[name]
            assert str(raised.value) == f"{name} from 127.0.0.1:{port}"
        with pytest.raises(Unreachable, match=r"Unreachable from 127\.0\.0\.1:9$"):
            await pool.set_boot(bmc(9, "raise:Unreachable"), BootDevice.DISK, persistent=False)
        with pytest.raises(Refused, match="internal error in the worker process: ValueError"):
            await pool.power(bmc(10, "raise:ValueError"), PowerAction.STATUS)
        assert await pool.power(bmc(10), PowerAction.STATUS) is PowerState.OFF  # still serving

    run(scenario)


def test_a_cancelled_call_is_cancelled_in_the_child() -> None:
    async def scenario(pool: WorkerPool) -> None:
        await pool.power(bmc(5), PowerAction.STATUS)  # the child is up: no start in the way
        call = asyncio.create_task(pool.power(bmc(5, "sleep"), PowerAction.STATUS))
        await asyncio.sleep(0.5)  # the child is running it (cancelled before, it never starts)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        deadline = time.monotonic() + 5
        while await pool.power(bmc(5, "cancelled?"), PowerAction.STATUS) is not PowerState.ON:
            assert time.monotonic() < deadline, "the child never cancelled the call"
            await asyncio.sleep(0.05)

    run(scenario)


def test_a_killed_child_fails_its_calls_and_is_restarted() -> None:
    async def scenario(pool: WorkerPool) -> None:
        sleeper = bmc(3, "sleep")
        status = asyncio.create_task(pool.power(sleeper, PowerAction.STATUS))
        cycle = asyncio.create_task(pool.power(sleeper, PowerAction.CYCLE))
        boot = asyncio.create_task(pool.set_boot(sleeper, BootDevice.BIOS, persistent=False))
        await asyncio.sleep(0.5)
        pid = pool.pid(sleeper)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(Unreachable, match="worker process exited before the device"):
            await status
        may_have_run = (
            "worker process exited; the action may or may not have run; check the power status"
        )
        for call in (cycle, boot):
            with pytest.raises(DeviceTimeout) as raised:
                await call
            assert type(raised.value) is DeviceTimeout
            assert may_have_run in str(raised.value)
        assert await pool.power(bmc(3), PowerAction.ON) is PowerState.ON
        assert pool.pid(sleeper) not in (None, pid)

    run(scenario)


def test_close_ends_the_children_and_fails_what_is_pending() -> None:
    async def scenario() -> None:
        pool = WorkerPool(SCRIPTED, processes=2)
        pending = asyncio.create_task(pool.power(bmc(4, "sleep"), PowerAction.STATUS))
        await asyncio.sleep(0.5)
        pid = pool.pid(bmc(4))
        assert pid is not None
        started = time.monotonic()
        await pool.close()
        assert time.monotonic() - started < 5  # the child cancels the sleep, not waits for it
        with pytest.raises(Unreachable):
            await pending
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # exited and reaped
        with pytest.raises(DriverError, match="closed"):
            await pool.power(bmc(4), PowerAction.STATUS)

    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.xdist_group("bmc_sim")  # with the other simulated fleets, not beside them
def test_ipmi_through_two_workers_against_simulated_bmcs() -> None:
    fleet = launch(50, "--processes", "2", "--on-delay", "0")  # on answers on at once
    paths = [
        IpmiPath("127.0.0.1", "admin", PASSWORD, port=port)
        for port in range(fleet.base, fleet.base + 50)
    ]

    async def each(pool: WorkerPool, action: PowerAction) -> list[PowerState]:
        return await asyncio.gather(*(pool.power(path, action) for path in paths))

    async def scenario(pool: WorkerPool) -> None:
        assert await each(pool, PowerAction.STATUS) == [PowerState.OFF] * 50
        assert await each(pool, PowerAction.ON) == [PowerState.ON] * 50
        assert all(fleet.control.state(path.port)["power"] == "on" for path in paths)
        assert await each(pool, PowerAction.OFF) == [PowerState.OFF] * 50
        assert all(fleet.control.state(path.port)["power"] == "off" for path in paths)
        assert len({pool.pid(path) for path in paths}) == 2

    try:
        run(scenario, kind="ipmi", max_logins=16)
    finally:
        assert fleet.stop() == 0


def test_start_brings_every_child_up_before_the_first_call() -> None:
    async def scenario() -> None:
        pool = WorkerPool("fake", processes=2)
        try:
            await pool.start()
            pids = [pool.pid(IpmiPath(f"10.0.0.{n}", "u", "p")) for n in range(1, 9)]
            assert len({pid for pid in pids if pid is not None}) == 2  # both up, none started late
            assert None not in pids
            await pool.start()  # again: nothing new
            assert [pool.pid(IpmiPath(f"10.0.0.{n}", "u", "p")) for n in range(1, 9)] == pids
        finally:
            await pool.close()

    asyncio.run(scenario())
