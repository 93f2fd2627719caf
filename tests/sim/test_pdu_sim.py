"""The simulated PDUs against real clients (asyncssh, OpenSSH's ssh), wired to machines."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sim.control import ControlError
from sim.machine import Control, Machine, Power, Timing
from sim.pdu import Feed, Pdu
from sim.sensors import Health, PsuState
from sim.ssh import host_key, public_line
from tests.sim.aio import run, until
from tests.sim.fleet import PASSWORD, RunningFleet, launch, openssh

Client = asyncssh.SSHClientProcess[bytes]
RARITAN_PROMPT = b"[pdu1] # "
APC_PROMPT = b"apc>"


class Cli:
    """A PDU's CLI over asyncssh with a PTY: one command, its output up to the next prompt."""

    def __init__(self, process: Client, prompt: bytes) -> None:
        self.process, self.prompt = process, prompt
        self._buffer = b""

    async def read_to(self, wanted: bytes) -> bytes:
        async with asyncio.timeout(5):
            while wanted not in self._buffer:
                chunk = await self.process.stdout.read(4096)
                assert chunk, f"EOF before {wanted!r}; got {self._buffer!r}"
                self._buffer += chunk
        seen, _, self._buffer = self._buffer.partition(wanted)
        return seen + wanted

    async def command(self, line: str, answer: str | None = None) -> str:
        """The output after the echoed line, up to the prompt; answers a [y/n] question if given."""
        self.process.stdin.write(line.encode() + b"\r")
        output = b""
        if answer is not None:
            output = await self.read_to(b"[y/n] ")
            self.process.stdin.write(answer.encode())
        output += await self.read_to(self.prompt)
        echo = line.encode() + b"\r\n"
        assert output.startswith(echo), output
        return output[len(echo) : -len(self.prompt)].decode()


@asynccontextmanager
async def pdu_cli(pdu: Pdu) -> AsyncIterator[Cli]:
    trusted = asyncssh.import_public_key(public_line(pdu.key))
    async with asyncssh.connect(
        "127.0.0.1",
        pdu.port,
        username="admin",
        password=PASSWORD,
        known_hosts=([trusted], [], []),
        client_keys=None,
    ) as conn:
        process: Client = await conn.create_process(term_type="xterm", encoding=None)
        cli = Cli(process, pdu.prompt().encode())
        await cli.read_to(cli.prompt)  # the banner and the first prompt
        yield cli


@asynccontextmanager
async def wired_pdu(dialect: str) -> AsyncIterator[tuple[Pdu, Machine, Machine]]:
    """Four outlets: web01 on outlet 1, db01 (dual PSU) on 2 and 3, nothing on 4; both on."""
    pdu = Pdu("pdu1", dialect, 4, {"admin": PASSWORD}, host_key("pdu1"), cycle_delay=0.3)
    web, db = Machine(Timing(on_delay=0.05)), Machine(Timing(on_delay=0.05))
    pdu.wire(1, Feed(web), "web01")
    db_feed = Feed(db)
    pdu.wire(2, db_feed, "db01")
    pdu.wire(3, db_feed, "db01")
    web.press(Power.ON)
    db.press(Power.ON)
    await pdu.start("127.0.0.1", 0)
    try:
        yield pdu, web, db
    finally:
        await pdu.close()


def power(machine: Machine) -> Power:
    """Read power through a call, so that mypy does not keep an earlier read's narrowing."""
    return machine.power


def causes(machine: Machine) -> list[str]:
    return [boot.cause for boot in machine.boot_log]


def test_raritan_px_status_confirmations_and_power_loss() -> None:
    async def scenario() -> None:
        async with wired_pdu("raritan_px") as (pdu, web, _), pdu_cli(pdu) as cli:
            assert await cli.command("show outlets") == (
                "Outlet 1 - web01:\r\n  Power state: On\r\n\r\n"
                "Outlet 2 - db01:\r\n  Power state: On\r\n\r\n"
                "Outlet 3 - db01:\r\n  Power state: On\r\n\r\n"
                "Outlet 4 - Outlet 4:\r\n  Power state: On\r\n"
            )
            question = "Do you wish to turn outlet 1 off? [y/n] "
            assert await cli.command("power outlets 1 off", "n") == question + "n\r\n"
            assert power(web) is Power.ON  # declined
            assert await cli.command("power outlets 1 off", "y") == question + "y\r\n"
            assert power(web) is Power.OFF
            assert not web.ac
            assert (
                await cli.command("show outlets 1") == "Outlet 1 - web01:\r\n  Power state: Off\r\n"
            )
            assert web.control(Control.ON) is False  # no AC, no chassis control
            await cli.command("power outlets 1 on", "y")
            await until(lambda: power(web) is Power.ON)
            assert causes(web) == ["external", "ac"]  # power on after AC loss

            cycle = "Do you wish to cycle power of outlet 1? [y/n] y\r\n"
            assert await cli.command("power outlets 1 cycle", "y") == cycle
            assert "Power state: Off" in await cli.command("show outlets 1")  # during the delay
            assert power(web) is Power.OFF
            await until(lambda: power(web) is Power.ON, within=2)
            assert "Power state: On" in await cli.command("show outlets 1")
            assert causes(web) == ["external", "ac", "ac"]

            assert await cli.command("show outlets 7") == "Error: Invalid outlet number 7\r\n"
            assert await cli.command("power outlets 0 off") == "Error: Invalid outlet number 0\r\n"
            assert await cli.command("reboot everything") == "Error: Unknown command\r\n"
            cli.process.stdin.write(b"exit\r")
            assert (await cli.process.wait()).exit_status == 0

    run(scenario)


def test_dual_power_supplies_need_every_outlet_off() -> None:
    async def scenario() -> None:
        async with wired_pdu("raritan_px") as (pdu, web, db), pdu_cli(pdu) as cli:
            await cli.command("power outlets 2 off", "y")
            assert power(db) is Power.ON  # the other supply still feeds it
            assert db.sensors.snapshot()["sensors"]["PSU1"]["state"] == PsuState.AC_LOST
            assert db.sensors.snapshot()["sensors"]["PSU2"]["state"] == PsuState.OK
            assert db.sensors.log.records()[-1][11:14] == b"\x40\x6f\x03"  # PSU1: AC lost
            await cli.command("power outlets 2,3 off", "y")
            assert power(db) is Power.OFF
            assert power(web) is Power.ON
            await cli.command("power outlets 3 on", "y")
            await until(lambda: power(db) is Power.ON)
            assert db.sensors.snapshot()["sensors"]["PSU2"]["state"] == PsuState.OK
            assert web.sensors.overall() is Health.OK
            assert [o.on for o in pdu.outlets.values()] == [True, False, True, True]

    run(scenario)


def test_apc_status_switching_ranges_and_errors() -> None:
    async def scenario() -> None:
        async with wired_pdu("apc") as (pdu, web, db), pdu_cli(pdu) as cli:
            assert await cli.command("olStatus all") == (
                "E000: Success\r\n 1: web01: On\r\n 2: db01: On\r\n 3: db01: On\r\n"
                " 4: Outlet 4: On\r\n"
            )
            assert await cli.command("olOff 1,2-3") == "E000: Success\r\n"
            assert power(web) is Power.OFF
            assert power(db) is Power.OFF
            assert await cli.command("olStatus 2") == "E000: Success\r\n 2: db01: Off\r\n"
            assert await cli.command("olOn 2") == "E000: Success\r\n"
            await until(lambda: power(db) is Power.ON)
            assert await cli.command("olReboot 2-3") == "E000: Success\r\n"
            assert await cli.command("olStatus 3") == "E000: Success\r\n 3: db01: Off\r\n"
            assert power(db) is Power.OFF
            await until(lambda: power(db) is Power.ON, within=2)
            assert causes(db) == ["external", "ac", "ac"]
            assert await cli.command("olOn 9") == "E102: Parameter Error\r\n"
            assert await cli.command("olOn") == "E102: Parameter Error\r\n"
            assert await cli.command("reboot") == "E101: Command Not Found\r\n"
            cli.process.stdin.write(b"quit\r")
            assert (await cli.process.wait()).exit_status == 0

    run(scenario)


def test_openssh_client_on_a_raritan_px(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with wired_pdu("raritan_px") as (pdu, web, _):
            command, env = openssh(
                tmp_path, pdu.port, "admin", public_line(pdu.key), PASSWORD, "-tt"
            )
            ssh = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            assert ssh.stdin is not None
            assert ssh.stdout is not None
            try:
                await asyncio.wait_for(ssh.stdout.readuntil(RARITAN_PROMPT), 10)
                ssh.stdin.write(b"power outlets 1 off\r")
                await asyncio.wait_for(ssh.stdout.readuntil(b"[y/n] "), 5)
                ssh.stdin.write(b"y\r")
                await asyncio.wait_for(ssh.stdout.readuntil(RARITAN_PROMPT), 5)
                ssh.stdin.write(b"show outlets 1\rexit\r")
                output, errors = await asyncio.wait_for(ssh.communicate(), 10)
                assert ssh.returncode == 0, errors
                assert b"Outlet 1 - web01:\r\n  Power state: Off\r\n" in output
                assert power(web) is Power.OFF
            finally:
                if ssh.returncode is None:
                    ssh.kill()
                    await ssh.wait()

    run(scenario)


@pytest.fixture(scope="module")
def wired_fleet() -> Iterator[RunningFleet]:
    """8 machines in 2 processes: 4 two-port console servers and 2 four-outlet PDUs."""
    options = ["--processes", "2", "--console-servers", "4", "--console-ports", "2"]
    options += ["--pdus", "2", "--pdu-outlets", "4", "--pdu-cycle-delay", "0.3"]
    running = launch(8, *options)
    yield running
    assert running.stop() == 0


def test_fleet_wiring_and_a_pdu_cutting_a_machine(wired_fleet: RunningFleet) -> None:
    control, base = wired_fleet.control, wired_fleet.base
    wiring = control.wiring()
    devices = {device["name"]: device for device in wiring["devices"]}
    assert [(name, d["dialect"]) for name, d in devices.items()] == [
        ("cs1", "opengear"),
        ("cs2", "avocent_acs"),
        ("pdu1", "raritan_px"),
        ("cs3", "raritan_sx"),
        ("cs4", "menu"),
        ("pdu2", "apc"),
    ]
    assert all(d["host_key"].startswith("SHA256:") and d["port"] > 0 for d in devices.values())
    machine = wiring["machines"][5]
    assert machine == {
        "bmc_port": base + 5,
        "name": machine["name"],
        "console": {"server": "cs3", "port": 2, "label": machine["name"]},
        "pdu": [{"pdu": "pdu2", "outlet": 2}],
    }

    # cs3 lives in the second process: reached through the parent's control channel
    cs3 = devices["cs3"]
    assert asyncio.run(ssh_run(cs3, f"{cs3['username']}:nope")) == (b"No such port: nope\r\n", 1)
    assert control.console_port("cs3", 2)["label"] == machine["name"]

    port, pdu2 = base + 5, devices["pdu2"]
    control.set_power(port, "on")
    assert asyncio.run(apc(pdu2, "olOff 2")) == ["E000: Success"]
    state = control.state(port)
    assert (state["power"], state["ac"]) == ("off", False)
    assert control.outlet("pdu2", 2)["state"] == "Off"
    with pytest.raises(ControlError):
        control.outlet("pdu9", 1)
    output = asyncio.run(console_output(cs3, "2", lambda: control.outlet("pdu2", 2, "on")))
    assert output  # the machine's firmware, through its console server port
    wait_for(lambda: control.state(port)["power"] == "on")
    assert control.state(port)["boot_log"][-1]["cause"] == "ac"
    assert control.state(base + 4)["boot_log"] == []  # its neighbour never lost power


async def ssh_run(device: dict[str, Any], login: str) -> tuple[bytes, int | None]:
    async with asyncssh.connect(
        device["address"],
        device["port"],
        username=login,
        password=device["password"],
        known_hosts=([asyncssh.import_public_key(device["public_key"])], [], []),
        client_keys=None,
    ) as conn:
        result = await conn.run(term_type="xterm", encoding=None)
        assert isinstance(result.stdout, bytes)
        return result.stdout, result.exit_status


async def console_output(device: dict[str, Any], asked: str, act: Callable[[], object]) -> bytes:
    """Bytes from a console port in the second after `act` (run in a thread: it blocks)."""
    async with asyncssh.connect(
        device["address"],
        device["port"],
        username=f"{device['username']}:{asked}",
        password=device["password"],
        known_hosts=([asyncssh.import_public_key(device["public_key"])], [], []),
        client_keys=None,
    ) as conn:
        process: Client = await conn.create_process(term_type="xterm", encoding=None)
        await asyncio.to_thread(act)
        try:
            return await asyncio.wait_for(process.stdout.read(4096), 3)
        except TimeoutError:
            return b""


async def apc(device: dict[str, Any], *commands: str) -> list[str]:
    """Run APC commands in one session; their output lines."""
    async with asyncssh.connect(
        device["address"],
        device["port"],
        username=device["username"],
        password=device["password"],
        known_hosts=([asyncssh.import_public_key(device["public_key"])], [], []),
        client_keys=None,
    ) as conn:
        process: Client = await conn.create_process(term_type="xterm", encoding=None)
        cli = Cli(process, APC_PROMPT)
        await cli.read_to(APC_PROMPT)
        lines: list[str] = []
        for command in commands:
            lines += (await cli.command(command)).splitlines()
        return lines


def wait_for(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)
