"""IpmiDriver against real OpenIPMI `ipmi_sim` BMCs; outcomes read back with ipmitool or the BMC's
own files, never through the driver under test."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

import pytest

from agents.drivers import pyghmi_shim as shim
from agents.drivers.base import (
    AuthFailed,
    DeviceTimeout,
    NoSession,
    PoweredOff,
    Unreachable,
    Unsupported,
)
from agents.drivers.ipmi import IpmiDriver, _boot_plan
from agents.protocol import BootDevice, IpmiPath, PowerAction, PowerState, RedfishPath
from sim.openipmi import Bmc, free_udp_ports, openipmi_fleet

T = TypeVar("T")


@pytest.fixture(scope="module")
def fleet() -> Iterator[list[Bmc]]:
    with openipmi_fleet(20) as bmcs:
        yield bmcs


@pytest.fixture
def bmc(fleet: list[Bmc]) -> Bmc:
    """One BMC of the fleet, powered off, boot device default, its change log empty."""
    fleet[0].reset()
    return fleet[0]


def drive(scenario: Callable[[IpmiDriver], Awaitable[T]], **options: Any) -> T:
    """Run `scenario` with a new driver on a new event loop; close the driver whatever happens.

    The timeout turns a wedged reactor into a failure instead of a hung test run.
    """

    async def main() -> T:
        driver = IpmiDriver(**options)
        try:
            async with asyncio.timeout(60):
                return await scenario(driver)
        finally:
            async with asyncio.timeout(10):
                await driver.close()

    return asyncio.run(main())


def ipmi(bmc: Bmc, password: str | None = None, suite: int = 0) -> IpmiPath:
    return IpmiPath(
        bmc.address, bmc.username, password or bmc.password, port=bmc.port, cipher_suite=suite
    )


def ipmitool(bmc: Bmc, *args: str) -> str:
    """The independent witness: ipmitool over RMCP+ with suite 3 (ipmi_sim's only suite)."""
    command = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", bmc.address, "-p", str(bmc.port),
               "-U", bmc.username, "-P", bmc.password, *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout


def settled(bmc: Bmc, changes: int, within: float = 10.0) -> list[str]:
    """The BMC's change log once it has `changes` entries and a status query got through.

    ipmi_sim handles datagrams in order: once ipmitool's status is answered, any retransmitted
    command queued before it has run too.
    """
    deadline = time.monotonic() + within
    while len(bmc.changes()) < changes and time.monotonic() < deadline:
        time.sleep(0.05)
    ipmitool(bmc, "power", "status")
    return bmc.changes()


def test_the_reactor_keeps_an_idle_session_alive(bmc: Bmc) -> None:
    """ipmi_sim drops a session after 30 s without traffic; pyghmi's keep-alive, sent only when
    someone pumps it, must hold it open (without a pump the next call paid a 19 s re-login).

    First in the file because it is by far the slowest: under xdist it then overlaps the rest.
    """

    async def scenario(driver: IpmiDriver) -> int:
        await driver.power(ipmi(bmc), PowerAction.STATUS)
        await asyncio.sleep(33)
        await driver.power(ipmi(bmc), PowerAction.STATUS)
        return driver.logins

    assert drive(scenario, request_timeout=2.0) == 1


def test_status_on_and_off_as_ipmitool_sees_them(bmc: Bmc) -> None:
    async def scenario(driver: IpmiDriver) -> list[tuple[PowerState, str]]:
        seen = []
        for action in (PowerAction.STATUS, PowerAction.ON, PowerAction.OFF):
            state = await driver.power(ipmi(bmc), action)
            seen.append((state, ipmitool(bmc, "power", "status").strip()))
        return seen

    assert drive(scenario) == [
        (PowerState.OFF, "Chassis Power is off"),
        (PowerState.ON, "Chassis Power is on"),
        (PowerState.OFF, "Chassis Power is off"),
    ]
    assert bmc.changes() == ["power 1", "power 0"]


def test_the_paths_privilege_is_the_sessions_level(bmc: Bmc) -> None:
    """A `user` session reads the state but may not switch; `operator` may. The same BMC and
    credentials at another level get a session of their own, never the warm one."""

    def at(privilege: str) -> IpmiPath:
        return dataclasses.replace(ipmi(bmc), privilege=privilege)

    async def scenario(driver: IpmiDriver) -> list[PowerState | str]:
        seen: list[PowerState | str] = [await driver.power(at("user"), PowerAction.STATUS)]
        for privilege, action in (("user", PowerAction.ON), ("operator", PowerAction.ON),
                                  ("user", PowerAction.OFF)):  # fmt: skip
            try:
                seen.append(await driver.power(at(privilege), action))
            except AuthFailed as exc:
                seen.append(str(exc))
            seen.append(ipmitool(bmc, "power", "status").strip())
        return seen

    user_refused = (
        f"BMC {bmc.endpoint} refused Chassis Control (power up): insufficient privilege level "
        "(0xD4); it needs a session at operator or administrator privilege (the path's "
        "privilege option and the user's level)"
    )
    assert drive(scenario) == [
        PowerState.OFF,
        user_refused,
        "Chassis Power is off",
        PowerState.ON,
        "Chassis Power is on",
        user_refused.replace("power up", "power down"),
        "Chassis Power is on",
    ]
    assert bmc.changes() == ["power 1"]


def test_cycle_runs_once_and_answers_on(bmc: Bmc) -> None:
    bmc.set_power(True)
    assert drive(lambda driver: driver.power(ipmi(bmc), PowerAction.CYCLE)) is PowerState.ON
    assert settled(bmc, changes=2) == ["power 0", "power 1"]  # ipmi_sim: off, on 1 s later
    assert "Chassis Power is on" in ipmitool(bmc, "power", "status")


def test_reset_runs_once_and_answers_on(bmc: Bmc) -> None:
    bmc.set_power(True)
    assert drive(lambda driver: driver.power(ipmi(bmc), PowerAction.RESET)) is PowerState.ON
    assert settled(bmc, changes=1) == ["reset 1"]


def test_soft_answers_the_state_read_after_it(bmc: Bmc) -> None:
    bmc.set_power(True)
    assert drive(lambda driver: driver.power(ipmi(bmc), PowerAction.SOFT)) is PowerState.OFF
    assert bmc.changes() == ["shutdown 1"]
    assert "Chassis Power is off" in ipmitool(bmc, "power", "status")


def test_an_action_the_bmc_lacks_is_unsupported(bmc: Bmc) -> None:
    with pytest.raises(Unsupported, match=rf"BMC {bmc.endpoint} refused .*NMI.*0xCC"):
        drive(lambda driver: driver.power(ipmi(bmc), PowerAction.NMI))
    assert bmc.changes() == []


@pytest.mark.parametrize(
    ("device", "persistent", "selector", "stored"),
    [
        (BootDevice.BIOS, True, "Force Boot into BIOS Setup", "bios"),
        (BootDevice.PXE, False, "Force PXE", "pxe"),
        (BootDevice.CDROM, True, "Force Boot from CD/DVD", "cdrom"),
    ],
)
def test_boot_device_as_ipmitool_sees_it(
    bmc: Bmc, device: BootDevice, persistent: bool, selector: str, stored: str
) -> None:
    drive(lambda driver: driver.set_boot(ipmi(bmc), device, persistent))
    assert f"Boot Device Selector : {selector}" in ipmitool(bmc, "chassis", "bootparam", "get", "5")
    assert bmc.boot() == stored


def test_boot_flags_carry_the_persistent_bit() -> None:
    """ipmi_sim drops the flags byte (it keeps only the device), so the bytes are checked here."""
    flags = {
        (device, persistent): _boot_plan(device, persistent).requests[1].data
        for device in (BootDevice.BIOS, BootDevice.DEFAULT)
        for persistent in (False, True)
    }
    assert flags == {
        (BootDevice.BIOS, False): bytes((5, 0x80, 0x18, 0, 0, 0)),
        (BootDevice.BIOS, True): bytes((5, 0xC0, 0x18, 0, 0, 0)),
        (BootDevice.DEFAULT, False): bytes((5, 0, 0, 0, 0, 0)),
        (BootDevice.DEFAULT, True): bytes((5, 0, 0, 0, 0, 0)),
    }


def test_a_wrong_password_fails_fast_every_time_and_the_right_one_still_works(bmc: Bmc) -> None:
    async def scenario(driver: IpmiDriver) -> list[str]:
        outcomes = []
        for password in ("wrong", "wrong", bmc.password):
            start = time.monotonic()
            try:
                outcomes.append(str(await driver.power(ipmi(bmc, password), PowerAction.STATUS)))
            except AuthFailed as exc:
                outcomes.append(str(exc))
            assert time.monotonic() - start < 20  # fails, never hangs
        return outcomes

    rejected = f"BMC {bmc.endpoint} rejected the user or password (Incorrect password provided)"
    assert drive(scenario) == [rejected, rejected, "off"]


def test_a_silent_port_is_unreachable_and_works_once_a_bmc_listens() -> None:
    """Same credentials before and after: pyghmi's session cache must not keep the dead login."""
    port = free_udp_ports(1)[0]
    path = IpmiPath("127.0.0.1", "admin", "password", port=port)

    async def scenario(driver: IpmiDriver) -> PowerState:
        start = time.monotonic()
        with pytest.raises(Unreachable) as failed:
            await driver.power(path, PowerAction.STATUS)
        assert time.monotonic() - start < 3.5  # silence_timeout, not pyghmi's 4-6 s
        assert str(failed.value) == (
            f"BMC 127.0.0.1:{port} did not answer within 3 s (is it powered and reachable?)"
        )
        with openipmi_fleet(1, base_port=port) as [bmc]:
            assert bmc.port == port
            return await driver.power(path, PowerAction.STATUS)

    assert drive(scenario) is PowerState.OFF


class _SlowLink(asyncio.DatagramProtocol):
    """A UDP relay in front of a BMC that holds each of the BMC's replies for `delay` s."""

    def __init__(self, bmc: Bmc, delay: float) -> None:
        self.bmc, self.delay = (bmc.address, bmc.port), delay
        self.client: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr == self.bmc:
            loop = asyncio.get_running_loop()
            loop.call_later(self.delay, self.transport.sendto, data, self.client)
        else:
            self.client = addr
            self.transport.sendto(data, self.bmc)


def test_a_slow_bmc_keeps_its_patience_a_silent_one_does_not(bmc: Bmc) -> None:
    """A BMC that answers late (each reply 0.25 s) logs in well past the 0.3 s of silence."""

    async def scenario(driver: IpmiDriver) -> tuple[PowerState, float]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _SlowLink(bmc, 0.25), local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        try:
            start = time.monotonic()
            state = await driver.power(
                IpmiPath(bmc.address, bmc.username, bmc.password, port=port, cipher_suite=3),
                PowerAction.STATUS,
            )
            return state, time.monotonic() - start
        finally:
            transport.close()

    state, took = drive(scenario, silence_timeout=0.3)
    assert state is PowerState.OFF
    assert took > 1.0  # five login exchanges and a status read, each 0.25 s late


def test_silent_and_garbling_bmcs_neither_delay_nor_break_a_live_one(bmc: Bmc) -> None:
    """pyghmi raises on the garbled reply wherever its loop runs; only the garbler must fail."""

    class Garbler(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.DatagramTransport, transport)

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(b"\x06\x00\xff\x07\x00\x01", addr)  # a truncated IPMI 1.5 reply

    async def scenario(driver: IpmiDriver) -> tuple[bool, list[object]]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Garbler, local_addr=("127.0.0.1", 0))
        garbler = transport.get_extra_info("sockname")[1]
        silent, garbled, live = [
            asyncio.create_task(driver.power(path, PowerAction.STATUS))
            for path in (
                IpmiPath("127.0.0.1", "admin", "password", port=free_udp_ports(1)[0]),
                IpmiPath("127.0.0.1", "admin", "password", port=garbler),
                ipmi(bmc),
            )
        ]
        done, _ = await asyncio.wait((silent, live), return_when=asyncio.FIRST_COMPLETED)
        await asyncio.wait((silent, garbled, live))
        transport.close()
        return live in done, [task.exception() or task.result() for task in (silent, garbled, live)]

    live_first, (silent, garbled, live) = drive(scenario)
    assert live_first
    assert isinstance(silent, Unreachable)
    assert isinstance(garbled, NoSession)
    assert "sent a login reply pyghmi cannot handle (error('unpack requires" in str(garbled)
    assert live is PowerState.OFF


def test_forced_suite_17_is_refused_by_name(bmc: Bmc) -> None:
    with pytest.raises(AuthFailed, match=rf"BMC {bmc.endpoint} refused cipher suite 17 \("):
        drive(lambda driver: driver.power(ipmi(bmc, suite=17), PowerAction.STATUS))


@pytest.mark.parametrize("suite", [0, 3])
def test_suites_the_bmc_offers_work(bmc: Bmc, suite: int) -> None:
    """0 lets pyghmi propose 17 and fall back to 3 when ipmi_sim refuses it."""
    state = drive(lambda driver: driver.power(ipmi(bmc, suite=suite), PowerAction.STATUS))
    assert state is PowerState.OFF


def test_a_warm_session_is_reused_and_an_idle_one_closed(bmc: Bmc) -> None:
    async def scenario(driver: IpmiDriver) -> list[int]:
        logins = []
        for pause in (0.0, 0.0, 2.5):  # idle_timeout 1 s, swept every second
            await asyncio.sleep(pause)
            await driver.power(ipmi(bmc), PowerAction.STATUS)
            logins.append(driver.logins)
        return logins

    assert drive(scenario, idle_timeout=1.0) == [1, 1, 2]


def test_twenty_bmcs_at_once_from_one_driver(fleet: list[Bmc]) -> None:
    for index, bmc in enumerate(fleet):
        bmc.set_power(index % 2 == 0)

    async def scenario(driver: IpmiDriver) -> tuple[list[PowerState], list[PowerState]]:
        statuses = await asyncio.gather(
            *(driver.power(ipmi(bmc), PowerAction.STATUS) for bmc in fleet)
        )
        ons = await asyncio.gather(*(driver.power(ipmi(bmc), PowerAction.ON) for bmc in fleet))
        return statuses, ons

    statuses, ons = drive(scenario, max_logins=4)
    assert statuses == [PowerState.ON if i % 2 == 0 else PowerState.OFF for i in range(20)]
    assert ons == [PowerState.ON] * 20
    assert [bmc.power() for bmc in fleet] == ["on"] * 20


def test_a_cancelled_call_leaves_the_driver_usable(bmc: Bmc) -> None:
    silent = IpmiPath("127.0.0.1", "admin", "password", port=free_udp_ports(1)[0])

    async def scenario(driver: IpmiDriver) -> list[PowerState]:
        for path, delay in ((silent, 0.2), (ipmi(bmc), 0.0)):
            call = asyncio.create_task(driver.power(path, PowerAction.STATUS))
            await asyncio.sleep(delay)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        return [await driver.power(ipmi(bmc), PowerAction.STATUS) for _ in range(2)]

    assert drive(scenario) == [PowerState.OFF, PowerState.OFF]


def test_a_cycle_left_unanswered_is_not_sent_again(bmc: Bmc) -> None:
    """The BMC hangs in the cycle for 3 s; the driver gives up at 1 s and never retransmits."""
    bmc.set_power(True)
    bmc.stall(3)
    with pytest.raises(DeviceTimeout, match="it may or may not have run; check the power status"):
        drive(lambda driver: driver.power(ipmi(bmc), PowerAction.CYCLE), request_timeout=1.0)
    assert settled(bmc, changes=2) == ["power 0", "power 1"]


def test_a_redfish_path_is_not_for_this_driver() -> None:
    path = RedfishPath("https://10.0.0.1", "admin", "pw")
    with pytest.raises(Unsupported, match="cannot use a redfish path"):
        drive(lambda driver: driver.power(path, PowerAction.STATUS))


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The (netfn, command) of every request the driver sends, in order."""
    sent: list[tuple[int, int]] = []
    send = shim.Link.send

    def recording(link: shim.Link, netfn: int, command: int, *args: Any, **kwargs: Any) -> None:
        sent.append((netfn, command))
        send(link, netfn, command, *args, **kwargs)

    monkeypatch.setattr(shim.Link, "send", recording)
    return sent


def test_a_cycle_reads_the_state_first_on_a_fresh_or_warm_session(
    bmc: Bmc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read is the session's proof and tells a machine that is off from one that is on."""
    sent = _recording(monkeypatch)
    bmc.set_power(True)

    async def scenario(driver: IpmiDriver) -> list[list[tuple[int, int]]]:
        seen = []
        for _ in range(2):
            sent.clear()
            bmc.set_power(True)  # ipmi_sim's cycle leaves the machine off for a moment
            await driver.power(ipmi(bmc), PowerAction.CYCLE)
            seen.append(list(sent))
        return seen

    cold, warm = drive(scenario)
    assert cold == warm == [(0x00, 0x01), (0x00, 0x02)]  # Get Chassis Status, Chassis Control


@pytest.mark.parametrize("action", [PowerAction.CYCLE, PowerAction.RESET])
def test_a_cycle_or_reset_of_a_machine_that_is_off_sends_nothing(
    bmc: Bmc, monkeypatch: pytest.MonkeyPatch, action: PowerAction
) -> None:
    """Real BMCs answer 0xD5 to a cycle when off, and may take a reset without effect."""
    sent = _recording(monkeypatch)

    async def scenario(driver: IpmiDriver) -> None:
        with pytest.raises(PoweredOff, match=f"the machine is off; {action} was not sent"):
            await driver.power(ipmi(bmc), action)

    drive(scenario)
    assert sent == [(0x00, 0x01)]
    assert "Chassis Power is off" in ipmitool(bmc, "power", "status")
    assert bmc.changes() == []
