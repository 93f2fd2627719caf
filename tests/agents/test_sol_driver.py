"""SOL consoles against real SOL peers: OpenIPMI's `ipmi_sim` wired to a TCP "serial host" here,
and our simulated BMCs, whose machines print their POST screen and BIOS setup on the serial line.

ipmi_sim connects to the host's TCP port as if it were the machine's serial port: what the
host sends is what the machine prints, what it receives is what was typed. The host echoes
each line it gets back as `echo:<line>`, as a shell at a prompt would. ipmi_sim passes a SOL
break on as telnet's break (IAC BRK), even on a plain TCP line: the host counts those.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from agents.drivers import pyghmi_shim as shim
from agents.drivers.base import AuthFailed, Busy, DriverError
from agents.drivers.ipmi import IpmiDriver
from agents.protocol import IpmiPath, PowerAction, PowerState
from agents.workers import WorkerPool
from sim.openipmi import Bmc, openipmi_fleet
from tests.agents.test_workers import run
from tests.sim.fleet import PASSWORD, launch

T = TypeVar("T")


_BREAK = b"\xff\xf3"  # telnet IAC BRK


class SerialHost:
    """The machines behind ipmi_sim's serial ports: one TCP connection per BMC, in arrival order."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.lines: list[socket.socket] = []
        self.received: list[bytes] = []
        self.breaks = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def print(self, line: int, data: bytes) -> None:
        """The machine behind connection `line` prints `data`."""
        self.lines[line].sendall(data)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.lines) < count:
            assert time.monotonic() < deadline, "ipmi_sim never connected its serial port"
            time.sleep(0.02)

    def close(self) -> None:
        self._server.close()
        for line in self.lines:
            line.close()

    def _accept(self) -> None:
        while True:
            try:
                line, _ = self._server.accept()
            except OSError:
                return
            self.lines.append(line)
            threading.Thread(target=self._echo, args=(line,), daemon=True).start()

    def _echo(self, line: socket.socket) -> None:
        buffered = b""
        while True:
            try:
                data = line.recv(4096)
            except OSError:
                return
            if not data:
                return
            self.received.append(data)
            self.breaks += data.count(_BREAK)
            buffered += data.replace(_BREAK, b"")
            while b"\r" in buffered:
                typed, _, buffered = buffered.partition(b"\r")
                line.sendall(b"echo:" + typed + b"\r\n")


@pytest.fixture(scope="module")
def host() -> Iterator[SerialHost]:
    serial = SerialHost()
    yield serial
    serial.close()


@pytest.fixture(scope="module")
def fleet(host: SerialHost) -> Iterator[list[Bmc]]:
    with openipmi_fleet(2, sol=f"tcp:127.0.0.1:{host.port}") as bmcs:
        host.wait_for(2)
        yield bmcs


def drive(scenario: Callable[[IpmiDriver], Awaitable[T]]) -> T:
    """`scenario` with a new driver on a new loop; the driver (and its consoles) closed after."""

    async def main() -> T:
        driver = IpmiDriver(login_timeout=5.0, request_timeout=2.0)
        try:
            async with asyncio.timeout(30):
                return await scenario(driver)
        finally:
            async with asyncio.timeout(10):
                await driver.close()

    return asyncio.run(main())


def sol(bmc: Bmc, password: str | None = None) -> IpmiPath:
    return IpmiPath(bmc.address, bmc.username, password or bmc.password, port=bmc.port)


async def read_until(output: AsyncIterator[bytes], wanted: bytes, within: float = 5.0) -> bytes:
    """Output up to and including `wanted`; fails the test if it does not come in time."""
    seen = b""
    async with asyncio.timeout(within):
        while wanted not in seen:
            seen += await anext(output)
    return seen


async def bmc_line(host: SerialHost, output: AsyncIterator[bytes]) -> int:
    """Print a marker on every serial line; the one that shows on this console is its line."""
    for line in range(len(host.lines)):
        host.print(line, f"<line {line}>".encode())
    seen = await read_until(output, b">")
    return int(seen.split(b"<line ")[1].split(b">")[0])


def test_output_and_echo_through_ipmi_sim(fleet: list[Bmc], host: SerialHost) -> None:
    async def scenario(driver: IpmiDriver) -> None:
        console = await driver.open_console(sol(fleet[0]))
        output = aiter(console)
        line = await bmc_line(host, output)
        host.print(line, b"\x1b[2J BIOS v1.0\r\n")  # not UTF-8 clean on purpose: raw bytes
        assert b"\x1b[2J BIOS v1.0\r\n" in await read_until(output, b"v1.0\r\n")
        await console.write(b"uname\r")
        assert b"echo:uname\r\n" in await read_until(output, b"echo:uname")
        breaks = host.breaks
        await console.send_break()  # in order with the bytes around it; the line goes on
        await console.write(b"after break\r")
        assert b"echo:after break" in await read_until(output, b"echo:after break")
        assert host.breaks == breaks + 1
        await console.resize(132, 43)  # a serial line has no size: nothing happens
        await console.close()
        assert console.reason == "closed"
        assert [chunk async for chunk in output] == []  # the iterator ends after close

    drive(scenario)


def test_a_long_write_arrives_whole_and_in_order(fleet: list[Bmc], host: SerialHost) -> None:
    """More than the BMC takes in one packet, and more than the write backlog: all of it, once."""
    text = b"".join(b"%05d," % n for n in range(6000)) + b"\r"  # 36 KB

    async def scenario(driver: IpmiDriver) -> None:
        console = await driver.open_console(sol(fleet[0]))
        output = aiter(console)
        before = len(b"".join(host.received))
        await console.write(text)
        await read_until(output, b"05999,", within=20)
        assert b"".join(host.received)[before:] == text
        await console.close()

    drive(scenario)


def test_a_second_console_is_busy_and_close_frees_the_bmc(fleet: list[Bmc]) -> None:
    async def scenario(driver: IpmiDriver) -> None:
        first = await driver.open_console(sol(fleet[1]))
        with pytest.raises(Busy) as raised:
            await driver.open_console(sol(fleet[1]))
        assert str(raised.value) == (
            f"BMC {fleet[1].endpoint}: another SOL session is active on this BMC"
        )
        await first.close()
        second = await driver.open_console(sol(fleet[1]))
        await second.write(b"still here\r")
        await read_until(aiter(second), b"echo:still here")

    drive(scenario)


def test_a_wrong_password_is_auth_failed(fleet: list[Bmc]) -> None:
    async def scenario(driver: IpmiDriver) -> None:
        with pytest.raises(AuthFailed, match=rf"^BMC {fleet[0].endpoint} rejected the user or"):
            await driver.open_console(sol(fleet[0], password="wrong"))

    drive(scenario)


def test_a_frozen_bmc_ends_the_console_and_never_stalls_power(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes to a BMC that stopped answering wait for acks that never come: power on another
    BMC of the same reactor goes on at full speed, and the console ends saying why."""
    # Three resends 1 s apart (not pyghmi's 12.5 s): a reactor stalled by them would make a
    # status read wait ≥ 1 s, far above a loaded machine's worst for one (bound below: 0.9 s).
    monkeypatch.setattr(shim, "_SOL_WAITS", (1.0, 1.0, 1.0))
    serial = SerialHost()
    with openipmi_fleet(2, sol=f"tcp:127.0.0.1:{serial.port}") as (frozen, alive):

        async def scenario(driver: IpmiDriver) -> None:
            console = await driver.open_console(sol(frozen))
            await driver.power(sol(alive), PowerAction.STATUS)  # logged in: timing status only
            os.kill(frozen.process.pid, signal.SIGSTOP)
            try:
                await console.write(b"into the void\r")
                took = []
                for _ in range(5):
                    started = time.monotonic()
                    assert await driver.power(sol(alive), PowerAction.STATUS) is PowerState.OFF
                    took.append(time.monotonic() - started)
                    await asyncio.sleep(0.2)
                assert max(took) < 0.9
                async with asyncio.timeout(10):
                    assert [chunk async for chunk in console] == []
                assert console.reason == (
                    f"BMC {frozen.endpoint} ended the SOL session (Connection lost)"
                )
                with pytest.raises(DriverError, match="has ended"):
                    await console.write(b"more\r")
            finally:
                os.kill(frozen.process.pid, signal.SIGCONT)

        drive(scenario)
    serial.close()


def test_a_console_through_the_worker_pool(fleet: list[Bmc], host: SerialHost) -> None:
    """In the child serving the BMC's power; Busy crosses the pipe; a flood of output on one
    console leaves power answers on time."""

    async def scenario(pool: WorkerPool) -> None:
        path = sol(fleet[1])
        assert await pool.power(path, PowerAction.STATUS) is PowerState.OFF
        console = await pool.open_console(path)
        output = aiter(console)
        line = await bmc_line(host, output)
        await console.write(b"whoami\r")
        await read_until(output, b"echo:whoami")
        with pytest.raises(Busy, match="another SOL session is active on this BMC"):
            await pool.open_console(path)
        flood = threading.Thread(target=host.print, args=(line, b"#" * 200_000 + b"END"))
        flood.start()
        took = []
        for _ in range(5):
            started = time.monotonic()
            await pool.power(sol(fleet[0]), PowerAction.STATUS)
            took.append(time.monotonic() - started)
        assert max(took) < 2.0  # starved behind the flood, it would wait for all of it
        seen = await read_until(output, b"END", within=20)
        flood.join()
        assert seen.count(b"#") + console.dropped >= 200_000
        await console.close()
        assert console.reason == "closed"
        again = await pool.open_console(path)
        await again.write(b"back\r")
        await read_until(aiter(again), b"echo:back")
        await again.close()

    run(scenario, kind="ipmi")


def test_a_dead_worker_ends_its_consoles() -> None:
    """The reason says so; the BMC still holds SOL for the dead child's session until its own
    idle timeout (30 s on ipmi_sim): a new console there is Busy meanwhile, not taken over."""
    serial = SerialHost()
    with openipmi_fleet(1, sol=f"tcp:127.0.0.1:{serial.port}") as (bmc,):

        async def scenario(pool: WorkerPool) -> None:
            console = await pool.open_console(sol(bmc))
            pid = pool.pid(sol(bmc))
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            async with asyncio.timeout(5):
                assert [chunk async for chunk in console] == []
            assert console.reason == "the IPMI worker process exited"
            with pytest.raises(DriverError, match="has ended"):
                await console.write(b"ls\r")
            with pytest.raises(Busy):
                await pool.open_console(sol(bmc))

        run(scenario, kind="ipmi")
    serial.close()


@pytest.mark.xdist_group("bmc_sim")  # with the other simulated fleets, not beside them
def test_post_and_bios_setup_on_a_simulated_bmc_through_the_workers() -> None:
    """Pressing F2 during POST enters setup; a second console is Busy (the sim's SOL, like
    pyghmi's, is never taken over here); a wrong password is AuthFailed; close, then reopen."""
    fleet = launch(2, "--on-delay", "0")  # on answers on at once; POST then takes 1.5 s
    path = IpmiPath("127.0.0.1", "admin", PASSWORD, port=fleet.base)

    async def scenario(pool: WorkerPool) -> None:
        console = await pool.open_console(path)
        output = aiter(console)
        assert await pool.power(path, PowerAction.ON) is PowerState.ON
        await read_until(output, b"Press <F2> to enter SETUP")
        await console.write(b"\x1b[12~")
        await read_until(output, b"BIOS SETUP UTILITY")
        with pytest.raises(Busy, match=rf"^BMC {path.endpoint}: another SOL session is active"):
            await pool.open_console(path)
        wrong = IpmiPath("127.0.0.1", "admin", "not-the-password", port=fleet.base)
        with pytest.raises(AuthFailed, match="rejected the user or password"):
            await pool.open_console(wrong)
        await console.close()
        assert console.reason == "closed"
        again = await pool.open_console(path)
        await again.write(b"\x1b[C")  # RIGHT: the next tab, the screen drawn again
        await read_until(aiter(again), b"BIOS SETUP UTILITY")
        await again.close()
        assert fleet.control.state(fleet.base)["power"] == "on"

    try:
        run(scenario, kind="ipmi")
    finally:
        assert fleet.stop() == 0
