"""Serial over LAN in the simulated BMC: the protocol on an in-memory console, then the real
clients (ipmitool and ipmiconsole on a pseudo-terminal, pyghmi's Console in its own process)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from sim import rmcp
from sim.firmware import Screen
from sim.fleet import Fleet, start_fleet
from sim.ipmi import Bmc
from sim.machine import Machine, Power, Timing
from sim.rmcp import Payload
from sim.sol import HISTORY, PAYLOAD_SIZE
from tests.sim.console import Console, free_ports
from tests.sim.fleet import ROOT, ipmitool

T = TypeVar("T")
APP, TRANSPORT = 0x06, 0x0C
ACTIVATE = bytes([1, 1, 0xC0, 0, 0, 0])
ADDRESS = ("127.0.0.1", 40000)
FAST = Timing(on_delay=0.05, cycle_off=0.1, soft_delay=0.1, post_seconds=0.8)

# --- the protocol, on an in-memory console -------------------------------------------------


class SolConsole(Console):
    """An RMCP+ console that also speaks SOL, and sees what the BMC sends on its own."""

    def __init__(self, bmc: Bmc, user: str = "admin", password: str = "password") -> None:
        super().__init__(bmc, user, password)
        self.sent: list[bytes] = []
        self.login()
        others = bmc.transmit

        def transmit(datagram: bytes, address: tuple[str | object, int]) -> None:
            if rmcp.parse_frame(datagram).session_id == self.console_id:
                self.sent.append(datagram)
            elif others is not None:
                others(datagram, address)

        bmc.transmit = transmit

    def call(self, netfn: int, command: int, data: bytes = b"") -> tuple[int, bytes]:
        return self.answer(self.bmc.receive(self.packet(netfn, command, data), ADDRESS))

    def sol(self, payload: bytes) -> bytes | None:
        """Send one SOL packet; the BMC's answer (an ack), decrypted."""
        self.sequence += 1
        datagram = rmcp.seal(Payload.SOL, self.bmc_id, self.sequence, payload, self.keys)
        reply = self.bmc.receive(datagram, ADDRESS)
        return None if reply is None else self.open(reply)

    def open(self, datagram: bytes) -> bytes:
        assert self.keys is not None
        frame = rmcp.parse_frame(datagram)
        assert frame.payload_type == Payload.SOL
        assert frame.session_id == self.console_id
        assert rmcp.verify(frame, self.keys)
        return rmcp.decrypt(self.keys, frame.payload)

    def received(self) -> list[bytes]:
        """SOL packets the BMC sent on its own so far (and forget them)."""
        packets, self.sent = [self.open(datagram) for datagram in self.sent], []
        return packets


def in_loop(scenario: Callable[[Bmc], Awaitable[None]]) -> Bmc:
    """Run a scenario with an event loop (SOL's timers need one) against a fresh BMC."""
    bmc = Bmc(Machine(FAST), {"admin": "password", "viewer": "pw"})

    async def main() -> None:
        await scenario(bmc)

    asyncio.run(main())
    return bmc


def test_activation_answers_sizes_and_the_port_little_endian_and_is_exclusive() -> None:
    async def scenario(bmc: Bmc) -> None:
        bmc.sol.config.port = 0x1234
        first, second = SolConsole(bmc), SolConsole(bmc)
        assert first.call(APP, 0x4A, b"\x01") == (0, bytes([1, 0, 0]))
        assert first.call(APP, 0x48, ACTIVATE) == (
            0,
            bytes(4) + struct.pack("<HHHH", PAYLOAD_SIZE, PAYLOAD_SIZE, 0x1234, 0xFFFF),
        )
        assert second.call(APP, 0x48, ACTIVATE) == (0x80, b"")  # payload already active
        assert first.call(APP, 0x48, ACTIVATE) == (0x80, b"")
        assert second.call(APP, 0x4A, b"\x01") == (0, bytes([1, 1, 0]))
        assert second.call(APP, 0x4B, b"\x01\x01") == (
            0,
            struct.pack("<I", first.bmc_id) + bytes([1]) + bytes(7),
        )
        assert first.call(APP, 0x4E, b"\x0e") == (0, bytes([3, 0, 0x3F, 0, 0, 0, 0, 0]))
        assert first.call(APP, 0x48, bytes([1, 2, 0xC0, 0, 0, 0]))[0] == 0xCC  # one instance
        assert first.call(APP, 0x48, bytes([1, 1]))[0] == 0xC7

    in_loop(scenario)


def test_deactivating_another_sessions_sol_tells_it_and_frees_the_payload() -> None:
    async def scenario(bmc: Bmc) -> None:
        first, second = SolConsole(bmc), SolConsole(bmc)
        first.call(APP, 0x48, ACTIVATE)
        assert first.sol(bytes([3, 0, 0, 0]) + b"x") == bytes([0, 3, 1, 0])
        await asyncio.sleep(0.05)
        first.received()
        assert second.call(APP, 0x49, ACTIVATE) == (0, b"")  # pyghmi's force=True does this
        assert first.received() == [bytes([0, 3, 0, 0x50])]  # NACK + deactivating
        assert second.call(APP, 0x49, ACTIVATE) == (0x80, b"")  # already deactivated
        assert second.call(APP, 0x48, ACTIVATE)[0] == 0
        assert first.sol(bytes([4, 0, 0, 0]) + b"y") is None  # no longer its payload

    in_loop(scenario)


def test_sol_ends_with_its_session() -> None:
    async def scenario(bmc: Bmc) -> None:
        first, second = SolConsole(bmc), SolConsole(bmc)
        first.call(APP, 0x48, ACTIVATE)
        assert first.call(APP, 0x3C, struct.pack("<I", first.bmc_id)) == (0, b"")
        assert bmc.sol.owner is None
        assert second.call(APP, 0x48, ACTIVATE)[0] == 0
        bmc.drop_sessions()
        assert bmc.sol.owner is None

    in_loop(scenario)


def test_keys_reach_the_machine_once_and_breaks_are_generated() -> None:
    typed = bytearray()

    async def scenario(bmc: Bmc) -> None:
        bmc.machine.serial.on_input(typed.extend)
        console = SolConsole(bmc)
        console.call(APP, 0x48, ACTIVATE)
        assert console.sol(bytes([1, 0, 0, 0]) + b"ab") == bytes([0, 1, 2, 0])
        assert console.sol(bytes([1, 0, 0, 0]) + b"ab") == bytes([0, 1, 2, 0])  # a retransmit
        assert console.sol(bytes([2, 0, 0, 0x10])) == bytes([0, 2, 0, 0])  # generate break
        assert console.sol(bytes([0, 5, 0, 0])) is None  # a stray ack needs no answer

    bmc = in_loop(scenario)
    assert typed == b"ab"
    assert bmc.machine.serial.breaks == 1


def test_output_is_held_until_acked_and_retransmitted_then_given_up() -> None:
    async def scenario(bmc: Bmc) -> None:
        console = SolConsole(bmc)
        console.call(APP, 0x48, ACTIVATE)
        # retry count 2, every 50 ms (SOL configuration parameter 4)
        assert console.call(TRANSPORT, 0x21, bytes([1, 4, 2, 5])) == (0, b"")
        bmc.machine.serial.emit(b"hello")
        await asyncio.sleep(0.02)
        bmc.machine.serial.emit(b" world")  # waits behind the unacked packet
        for _ in range(100):
            await asyncio.sleep(0.01)
            if bmc.sol.dropped:
                break
        await asyncio.sleep(0.01)
        console.sol(bytes([0, 2, 6, 0]))  # ack " world"
        packets = console.received()
        assert packets[:3] == [bytes([1, 0, 0, 0]) + b"hello"] * 3  # sent, then 2 retries
        assert set(packets[3:]) == {bytes([2, 0, 0, 0]) + b" world"}
        assert bmc.sol.dropped == 5
        await asyncio.sleep(0.15)
        assert console.received() == []

    in_loop(scenario)


def test_a_nack_gets_the_rest_again_later_in_a_new_packet() -> None:
    async def scenario(bmc: Bmc) -> None:
        console = SolConsole(bmc)
        console.call(APP, 0x48, ACTIVATE)
        console.call(TRANSPORT, 0x21, bytes([1, 4, 7, 3]))
        bmc.machine.serial.emit(b"abcdef")
        await asyncio.sleep(0.02)
        assert console.received() == [bytes([1, 0, 0, 0]) + b"abcdef"]
        console.sol(bytes([0, 1, 2, 0x40]))  # took "ab", not ready for more
        assert console.received() == []
        await asyncio.sleep(0.1)  # the retry interval, 30 ms (then retransmissions of it)
        assert set(console.received()) == {bytes([2, 0, 0, 0]) + b"cdef"}

    in_loop(scenario)


def test_a_new_session_gets_the_last_2_kb_first_in_payload_sized_packets() -> None:
    async def scenario(bmc: Bmc) -> None:
        bmc.machine.serial.emit(bytes(range(256)) * 12)  # nobody attached: 3 KB
        console = SolConsole(bmc)
        console.call(APP, 0x48, ACTIVATE)
        received = bytearray()
        for _ in range(20):
            await asyncio.sleep(0.01)
            for packet in console.received():
                received += packet[4:]
                assert len(packet) <= PAYLOAD_SIZE
                console.sol(bytes([0, packet[0], len(packet) - 4, 0]))
        assert received == (bytes(range(256)) * 12)[-HISTORY:]

    in_loop(scenario)


def test_sol_configuration_parameters() -> None:
    async def scenario(bmc: Bmc) -> None:
        admin, viewer = SolConsole(bmc), SolConsole(bmc, "viewer", "pw")
        assert admin.call(TRANSPORT, 0x22, bytes([1, 1, 0, 0])) == (0, b"\x11\x01")
        assert admin.call(TRANSPORT, 0x22, bytes([0x81, 1, 0, 0])) == (0, b"\x11")
        assert admin.call(TRANSPORT, 0x22, bytes([1, 8, 0, 0])) == (0, b"\x11\x6f\x02")
        assert admin.call(TRANSPORT, 0x22, bytes([1, 2, 0, 0])) == (0, b"\x11\xc2")
        assert admin.call(TRANSPORT, 0x21, bytes([1, 0, 1])) == (0, b"")
        assert admin.call(TRANSPORT, 0x21, bytes([1, 0, 1])) == (0x81, b"")  # in progress
        assert admin.call(TRANSPORT, 0x21, bytes([1, 6, 6])) == (0, b"")  # 9600
        assert admin.call(TRANSPORT, 0x21, bytes([1, 5, 3])) == (0xCC, b"")
        assert admin.call(TRANSPORT, 0x21, bytes([1, 8, 1, 2])) == (0x82, b"")  # read-only
        assert admin.call(TRANSPORT, 0x22, bytes([1, 0x30, 0, 0])) == (0x80, b"")
        assert admin.call(TRANSPORT, 0x21, bytes([1, 0, 0])) == (0, b"")
        assert admin.call(TRANSPORT, 0x22, bytes([1, 6, 0, 0])) == (0, b"\x11\x06")
        viewer.call(APP, 0x3B, b"\x02")  # USER privilege
        assert viewer.call(TRANSPORT, 0x21, bytes([1, 1, 0]))[0] == 0xD4
        admin.call(TRANSPORT, 0x21, bytes([1, 2, 0xC3]))  # SOL needs OPERATOR from now on
        assert viewer.call(APP, 0x48, ACTIVATE)[0] == 0xD4
        admin.call(TRANSPORT, 0x21, bytes([1, 1, 0]))  # disabled
        assert admin.call(APP, 0x48, ACTIVATE)[0] == 0x81

    in_loop(scenario)


# --- the real clients ------------------------------------------------------------------------


class ThreadedFleet:
    """An in-process fleet on its own event loop thread; `run` calls into that loop."""

    def __init__(self, count: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.base = free_ports(count)
        while self.base + count > 0x8000:  # ipmiconsole: "hostname invalid" above port 32767
            self.base = free_ports(count)
        self.fleet: Fleet = asyncio.run_coroutine_threadsafe(
            start_fleet(count, self.base, timing=FAST), self.loop
        ).result(10)
        self.ports = iter(range(self.base, self.base + count))

    def run(self, function: Callable[[], T]) -> T:
        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def wait_for(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.run(check):
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.02)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def fleet() -> Iterator[ThreadedFleet]:
    running = ThreadedFleet(8)
    yield running
    running.close()


@pytest.fixture
def port(fleet: ThreadedFleet) -> int:
    """A BMC no other test touches."""
    return next(fleet.ports)


class Terminal:
    """A console client on a pseudo-terminal, as an operator runs it."""

    def __init__(self, *command: str) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.output = b""
        self.closed = False

    def expect(self, needle: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} never came; got {self.output[-400:]!r}"
            if select.select([self.master], [], [], min(left, 0.1))[0]:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:  # the client exited and closed the terminal
                    assert needle in self.output, f"{needle!r} not in {self.output[-400:]!r}"

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 10.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)
        if not self.closed:
            self.closed = True
            os.close(self.master)


def sol_activate(port: int) -> Terminal:
    return Terminal(
        *("ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(port)),
        *("-U", "admin", "-P", "password", "sol", "activate"),
    )


PYGHMI_CONSOLE = """
import json, sys, threading, time
from pyghmi.ipmi.console import Console
from pyghmi.ipmi.private.session import Session

port, force, typed = int(sys.argv[1]), sys.argv[2] == "force", sys.argv[3].encode()
received, events = bytearray(), []

def handler(data):
    if isinstance(data, dict):
        events.append(data)
    else:
        received.extend(data if isinstance(data, bytes) else data.encode())

def pump():
    while True:
        try:
            Session.wait_for_rsp(1)
        except Exception as error:
            events.append({"pump": repr(error)})

def wait(needle, seconds=5):
    deadline = time.monotonic() + seconds
    while needle not in received and time.monotonic() < deadline:
        if any("error" in event for event in events):
            return False
        time.sleep(0.01)
    return needle in received

threading.Thread(target=pump, daemon=True).start()
console = Console("127.0.0.1", "admin", "password", handler, port=port, force=force)
result = {"prompt": wait(b"login: ")}
if result["prompt"]:
    console.send_data(typed + b"\\r")
    result["echo"] = wait(typed + b"\\r\\nPassword: ")
result["events"] = events
console.close()
print(json.dumps(result), flush=True)
"""


def pyghmi_console(port: int, typed: str, force: bool = False) -> dict[str, Any]:
    """pyghmi's Console in its own process (its sessions are process-global): what it saw."""
    result = subprocess.run(
        [sys.executable, "-c", PYGHMI_CONSOLE, str(port), "force" if force else "-", typed],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def booted(fleet: ThreadedFleet, port: int) -> Machine:
    """Power the machine on and wait for its login prompt."""
    machine = fleet.fleet.machine(port)
    fleet.run(lambda: machine.press(Power.ON))
    fleet.wait_for(lambda: machine.firmware.screen is Screen.LOGIN)
    return machine


def test_ipmitool_sees_post_enters_setup_with_f2_and_leaves_with_tilde_dot(
    fleet: ThreadedFleet, port: int
) -> None:
    terminal = sol_activate(port)
    try:
        terminal.expect(b"[SOL Session operational.  Use ~? for help]")
        power = ipmitool(port, "chassis", "power", "on", suite=3, password="password")
        assert power.returncode == 0, power.stderr
        terminal.expect(b"Rackhand SimBIOS 2.1")
        terminal.expect(b"Press <F2> to enter SETUP, <F12> for Network Boot\r\n")
        terminal.send(b"\x1b[12~")
        terminal.expect(b"BIOS SETUP UTILITY")
        terminal.send(b"\r~.")  # ipmitool's escape counts only at the start of a line
        assert terminal.wait() == 0
    finally:
        terminal.close()
    bmc = fleet.fleet.bmc(port)
    keys, screen = fleet.run(lambda: (list(bmc.machine.firmware.keys), bmc.machine.firmware.screen))
    assert keys[:2] == ["F2", "ENTER"]
    assert screen is Screen.SETUP
    assert fleet.run(lambda: bmc.sol.owner) is None  # ipmitool deactivated on its way out


def test_pyghmi_console_gets_the_prompt_and_its_typing_is_echoed(
    fleet: ThreadedFleet, port: int
) -> None:
    machine = booted(fleet, port)
    result = pyghmi_console(port, "operator7")
    assert result == {"prompt": True, "echo": True, "events": []}
    assert fleet.run(lambda: machine.firmware.screen) is Screen.PASSWORD
    assert fleet.run(lambda: fleet.fleet.bmc(port).sol.owner) is None  # close() deactivated


def test_a_second_activation_is_refused_unless_forced(fleet: ThreadedFleet, port: int) -> None:
    booted(fleet, port)
    holder = sol_activate(port)
    try:
        holder.expect(b"SOL Session operational")
        second = subprocess.run(
            [*ipmitool_args(port), "sol", "activate"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "SOL payload already active on another session" in second.stdout + second.stderr
        refused = pyghmi_console(port, "nobody")
        assert refused["events"] == [{"error": "SOL Session active for another client"}]
        taken = pyghmi_console(port, "operator9", force=True)  # Deactivate Payload, then again
        assert (taken["prompt"], taken["echo"]) == (True, True)
    finally:
        holder.close()


def ipmitool_args(port: int) -> list[str]:
    target = ["-H", "127.0.0.1", "-p", str(port), "-U", "admin", "-P", "password"]
    return ["ipmitool", "-I", "lanplus", "-C", "3", *target]


@pytest.mark.skipif(shutil.which("ipmiconsole") is None, reason="FreeIPMI is not installed")
def test_ipmiconsole_gets_the_recent_output_first_and_leaves_with_ampersand_dot(
    fleet: ThreadedFleet, port: int
) -> None:
    machine = booted(fleet, port)
    terminal = Terminal("ipmiconsole", "-h", f"127.0.0.1:{port}", "-u", "admin", "-p", "password")
    try:
        terminal.expect(b"[SOL established]")
        terminal.expect(machine.name.encode() + b" login: ")  # from before: the BMC's history
        terminal.send(b"oper8\r")
        terminal.expect(b"oper8\r\nPassword: ")
        terminal.send(b"x\r")
        terminal.expect(b"\r\n$ ")
        terminal.send(b"&.")
        assert terminal.wait() == 0
    finally:
        terminal.close()
