"""The machine's serial-console firmware in real time, on a short POST: screens, keys, power."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sim.firmware import KeyDecoder, Screen
from sim.machine import BootDevice, BootOverride, Control, Machine, Power, Timing
from tests.sim.test_machine import FakeClock

FAST = Timing(on_delay=0.02, cycle_off=0.05, soft_delay=0.05, post_seconds=0.2)
F2 = {"vt220": b"\x1b[12~", "vt100": b"\x1bOQ", "vt100+": b"\x1b2"}


class Console:
    """Everything the machine printed, and a way to wait for some of it."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.output = bytearray()
        machine.serial.attach(self.output.extend)

    async def expect(self, needle: bytes, seconds: float = 3.0) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while needle not in self.output:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{needle!r} not in {bytes(self.output)!r}")
            await asyncio.sleep(0.01)

    def type(self, data: bytes) -> None:
        self.machine.serial.feed(data)

    @property
    def screen(self) -> Screen:
        return self.machine.firmware.screen


def screen(machine: Machine) -> Screen:
    """Read the screen through a call, so that mypy does not keep an earlier read's narrowing."""
    return machine.firmware.screen


def run(scenario: Callable[[Console], Awaitable[None]], name: str = "web01") -> Console:
    async def main() -> Console:
        console = Console(Machine(FAST, name=name))
        await scenario(console)
        return console

    return asyncio.run(main())


async def log_in(console: Console) -> None:
    console.machine.press(Power.ON)
    await console.expect(b"web01 login: ")
    console.type(b"root\r")
    await console.expect(b"Password: ")
    console.type(b"secret\r")
    await console.expect(b"\r\n$ ")


def test_power_on_shows_post_then_boots_to_a_login_prompt() -> None:
    async def scenario(console: Console) -> None:
        assert console.machine.control(Control.ON)
        await asyncio.sleep(0.01)
        assert console.output == b""  # still waiting for on_delay: nothing on the line
        await console.expect(b"Press <F2> to enter SETUP, <F12> for Network Boot\r\n")
        assert console.screen is Screen.POST
        await console.expect(b"\r\nweb01 login: ")

    console = run(scenario)
    output = bytes(console.output)
    assert output.startswith(b"\x1b[2J\x1b[HRackhand SimBIOS 2.1  (C) 2026\r\n")
    assert output.index(b"Memory test") < output.index(b"Booting from Hard Disk...")
    assert console.machine.firmware.screens == [Screen.POST, Screen.BOOT, Screen.LOGIN]


@pytest.mark.parametrize("terminal", sorted(F2))
def test_f2_during_post_enters_setup_and_esc_boots_on(terminal: str) -> None:
    async def scenario(console: Console) -> None:
        console.machine.press(Power.ON)
        await console.expect(b"Press <F2>")
        console.type(F2[terminal])
        await console.expect(b"BIOS SETUP UTILITY")
        assert console.screen is Screen.SETUP
        await asyncio.sleep(FAST.post_seconds)  # setup waits for the operator
        assert console.screen is Screen.SETUP
        console.type(b"\x1b[C")  # right arrow: the Advanced tab
        await console.expect(b"Console Redirection")
        console.type(b"\x1b")
        await console.expect(b"login: ")

    console = run(scenario)
    output = bytes(console.output)
    assert b"Main  Advanced  Boot  Security  Save & Exit" in output
    assert b"System Time" in output
    assert b"Boot Option #1" not in output  # the Boot tab was never shown
    assert list(console.machine.firmware.keys) == ["F2", "RIGHT", "ESC"]


def test_f10_leaves_setup() -> None:
    async def scenario(console: Console) -> None:
        console.machine.set_boot(BootOverride(BootDevice.BIOS))
        console.machine.press(Power.ON)
        await console.expect(b"BIOS SETUP UTILITY")  # the override, no key needed
        console.type(b"\x1b[21~")
        await console.expect(b"Booting from Hard Disk...")

    console = run(scenario)
    assert console.machine.firmware.screens[:3] == [Screen.POST, Screen.SETUP, Screen.BOOT]


def test_f12_or_a_pxe_override_tries_the_network_then_the_disk() -> None:
    async def scenario(console: Console) -> None:
        console.machine.press(Power.ON)
        await console.expect(b"Press <F2>")
        console.type(b"\x1b[24~")
        await console.expect(b"PXE boot: DHCP...")
        assert console.screen is Screen.PXE
        await console.expect(b"login: ")
        console.machine.set_boot(BootOverride(BootDevice.PXE))
        console.output.clear()
        console.machine.control(Control.RESET)
        await console.expect(b"login: ")

    console = run(scenario)
    output = bytes(console.output)
    assert output.index(b"PXE boot: DHCP") < output.index(b"Booting from Hard Disk")
    assert console.machine.firmware.screens.count(Screen.PXE) == 2


def test_login_echoes_the_name_not_the_password_and_the_shell_echoes_lines() -> None:
    async def scenario(console: Console) -> None:
        await log_in(console)
        console.type(b"uptimx\x7fe\r")
        await console.expect(b"uptimx\b \be\r\n$ ")
        console.type(b"exit\r")
        await console.expect(b"logout\r\n\r\nweb01 login: ")

    console = run(scenario)
    output = bytes(console.output)
    assert b"login: root\r\nPassword: \r\n$ " in output
    assert b"secret" not in output
    assert console.screen is Screen.LOGIN


def test_break_in_the_shell_prints_the_sysrq_help() -> None:
    async def scenario(console: Console) -> None:
        await log_in(console)
        console.machine.serial.send_break()
        await console.expect(b"\r\nSysRq : HELP : loglevel(0-9) reboot(b) ")

    assert run(scenario).machine.firmware.keys[-1] == "BREAK"


def test_soft_off_says_power_down_then_the_line_goes_quiet() -> None:
    async def scenario(console: Console) -> None:
        await log_in(console)
        console.machine.control(Control.SOFT)
        await console.expect(b"reboot: Power down\r\n")
        assert console.machine.power is Power.OFF
        assert console.screen is Screen.OFF
        before = len(console.output)
        console.type(b"root\r")
        console.machine.serial.send_break()
        await asyncio.sleep(0.05)
        assert len(console.output) == before
        assert console.machine.firmware.keys[-1] == "ENTER"  # typed before the power went

    run(scenario)


def test_hard_off_mid_post_stops_output_at_once() -> None:
    async def scenario(console: Console) -> None:
        console.machine.press(Power.ON)
        await console.expect(b"SimBIOS")
        console.machine.control(Control.OFF)
        before = bytes(console.output)
        await asyncio.sleep(FAST.post_seconds * 2)
        assert console.output == before
        assert b"Power down" not in before

    run(scenario)


def test_an_ignored_soft_off_prints_nothing() -> None:
    async def scenario(console: Console) -> None:
        await log_in(console)
        console.machine.ignore_soft_off = True
        console.machine.control(Control.SOFT)
        await asyncio.sleep(FAST.soft_delay * 2)
        assert b"Power down" not in console.output
        assert console.screen is Screen.SHELL

    run(scenario)


def test_cycle_boots_again_on_time() -> None:
    async def scenario(console: Console) -> None:
        await log_in(console)
        console.output.clear()
        console.machine.control(Control.CYCLE)
        assert console.screen is Screen.OFF
        await console.expect(b"Rackhand SimBIOS")  # nobody read the machine's state meanwhile
        await console.expect(b"login: ")

    assert [r.cause for r in run(scenario).machine.boot_log] == ["external", "cycle"]


def test_escape_sequences_split_over_reads_are_one_key() -> None:
    decoder = KeyDecoder()
    assert decoder.decode(b"a\x1b[1") == ["a"]
    assert decoder.decode(b"2~\x1bO") == ["F2"]
    assert decoder.decode(b"Q\r\n\x1b[15~x") == ["F2", "ENTER", "x"]  # CR LF is one Enter
    assert decoder.decode(b"\x1b") == []
    assert decoder.flush() == ["ESC"]
    assert decoder.decode(b"\x1bz") == ["ESC", "z"]


def test_without_a_loop_the_machine_stays_lazy_and_the_firmware_just_keeps_state() -> None:
    clock = FakeClock()
    machine = Machine(FAST, clock)
    output = bytearray()
    machine.serial.attach(output.extend)
    machine.control(Control.ON)
    assert screen(machine) is Screen.OFF
    clock.now += 1
    assert machine.power is Power.ON
    assert screen(machine) is Screen.POST  # nothing runs the POST timers
    assert output.startswith(b"\x1b[2J\x1b[H")
