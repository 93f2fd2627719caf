"""The PDU driver against the SSH PDU simulator: dual outlets, both dialects, one shell per PDU.

Each test wires a machine's two power supplies to outlets 5 and 6 of a simulated PDU, as a
dual-PSU server is; the machine's AC shows whether both supplies lost power together.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import asyncssh
import pytest

from agents.drivers.base import AuthFailed, HostKeyMismatch, Refused, Unsupported
from agents.drivers.pdu import PduDriver
from agents.drivers.ssh import SshSettings
from agents.protocol import (
    Dialect,
    PduOutletPath,
    PowerAction,
    PowerOrder,
    PowerState,
    Report,
    SshTarget,
    TaskStatus,
)
from agents.runner import Runner
from sim.machine import Machine, Power
from sim.pdu import Feed, Pdu
from sim.ssh import host_key

USER, PASSWORD = "apc", "s3cret"
DIALECTS = ["raritan_px", "apc"]
CYCLE_DELAY = 0.3


@dataclass
class Rack:
    """A simulated PDU feeding web05 (outlets 5, 6) and web07 (outlet 7), and a driver."""

    pdu: Pdu
    web05: Machine
    web07: Machine
    ac: list[bool]  # web05's AC, each time it changed
    logins: list[str]
    driver: PduDriver

    def path(self, *outlets: int, **changes: object) -> PduOutletPath:
        target = SshTarget(
            "127.0.0.1",
            USER,
            PASSWORD,
            Dialect(self.pdu.dialect),
            self.pdu.port,
            self.pdu.fingerprint,
        )
        return PduOutletPath(replace(target, **changes), outlets or (5, 6))  # type: ignore[arg-type]

    def switched(self) -> list[int]:
        return [outlet.switched for outlet in self.pdu.outlets.values()]

    async def ac_after(self, path: PduOutletPath, action: PowerAction) -> PowerState:
        """The driver's reading after `action`: on while any outlet of `path` feeds it."""
        return (
            PowerState.ON if (await self.driver.switch(path, action)).on_after else PowerState.OFF
        )


def on_rack(
    dialect: str,
    test: Callable[[Rack], Awaitable[None]],
    *,
    idle: float = 30.0,
    cycle_wait: float = 5.0,
) -> None:
    async def main() -> None:
        pdu = Pdu("pdu-a1", dialect, 8, {USER: PASSWORD}, host_key("pdu-a1"), CYCLE_DELAY)
        web05, web07 = Machine(), Machine()
        ac: list[bool] = []
        set_ac = web05.set_ac

        def watched(fed: bool) -> None:
            if fed != web05.ac:
                ac.append(fed)
            set_ac(fed)

        web05.set_ac = watched  # type: ignore[method-assign]
        feed = Feed(web05)
        pdu.wire(5, feed, "web05-psu1")
        pdu.wire(6, feed, "web05-psu2")
        pdu.wire(7, Feed(web07), "web07")
        logins: list[str] = []
        check = pdu.check_password

        def checking(login: str, password: str) -> bool:
            logins.append(login)
            return check(login, password)

        pdu.check_password = checking  # type: ignore[method-assign]
        await pdu.start("127.0.0.1", 0)
        driver = PduDriver(
            settings=SshSettings(connect_timeout=2), idle=idle, cycle_wait=cycle_wait, poll=0.05
        )
        try:
            await test(Rack(pdu, web05, web07, ac, logins, driver))
        finally:
            await driver.close()
            await pdu.close()

    asyncio.run(main())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_off_status_on_switch_both_supplies_and_report_what_the_pdu_reads(dialect: str) -> None:
    async def test(rack: Rack) -> None:
        assert await rack.ac_after(rack.path(), PowerAction.STATUS) is PowerState.ON
        assert await rack.ac_after(rack.path(), PowerAction.OFF) is PowerState.OFF
        assert not rack.pdu.outlets[5].on
        assert not rack.pdu.outlets[6].on
        assert rack.web05.power is Power.OFF
        assert rack.pdu.outlets[7].on  # the neighbour keeps its power
        assert await rack.ac_after(rack.path(), PowerAction.STATUS) is PowerState.OFF
        assert await rack.ac_after(rack.path(), PowerAction.ON) is PowerState.ON
        assert rack.ac == [False, True]
        assert rack.switched() == [0, 0, 0, 0, 2, 2, 0, 0]
        assert rack.logins == [USER]  # one shell for the whole conversation

    on_rack(dialect, test)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_on_or_off_as_the_outlets_already_are_sends_nothing(dialect: str) -> None:
    async def test(rack: Rack) -> None:
        reading = await rack.driver.switch(rack.path(), PowerAction.ON)
        assert (reading.on_before, reading.on_after, reading.sent) == (frozenset({5, 6}),) * 2 + (
            False,
        )
        reading = await rack.driver.switch(rack.path(7), PowerAction.OFF)
        assert (reading.on_before, reading.on_after, reading.sent) == (
            frozenset({7}),
            frozenset(),
            True,
        )
        assert rack.switched() == [0, 0, 0, 0, 0, 0, 1, 0]

    on_rack(dialect, test)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_cycle_is_sent_once_for_all_outlets_together_and_waits_for_them(dialect: str) -> None:
    async def test(rack: Rack) -> None:
        assert await rack.ac_after(rack.path(), PowerAction.CYCLE) is PowerState.ON
        assert rack.ac == [False, True]  # both supplies lost power at the same time
        assert rack.switched() == [0, 0, 0, 0, 1, 1, 0, 0]
        assert rack.pdu.outlets[5].on
        assert rack.pdu.outlets[6].on

    on_rack(dialect, test)


def test_a_cycle_longer_than_the_wait_reports_the_outlets_still_off() -> None:
    async def test(rack: Rack) -> None:
        assert await rack.ac_after(rack.path(), PowerAction.CYCLE) is PowerState.OFF
        assert rack.switched() == [0, 0, 0, 0, 1, 1, 0, 0]

    on_rack("apc", test, cycle_wait=0.0)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_one_supply_fed_is_on_and_the_others_are_named(
    dialect: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(rack: Rack) -> None:
        await rack.ac_after(rack.path(6), PowerAction.OFF)
        with caplog.at_level(logging.WARNING, logger="agents.drivers.pdu"):
            assert await rack.ac_after(rack.path(), PowerAction.STATUS) is PowerState.ON
        assert "outlet 5 on, outlet 6 off" in caplog.text

    on_rack(dialect, test)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("action", [PowerAction.SOFT, PowerAction.RESET, PowerAction.NMI])
def test_a_pdu_outlet_only_switches_power(dialect: str, action: PowerAction) -> None:
    async def test(rack: Rack) -> None:
        with pytest.raises(Unsupported, match="can only switch power: on, off, cycle"):
            await rack.ac_after(rack.path(), action)
        assert rack.logins == []

    on_rack(dialect, test)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_outlet_the_pdu_lacks_is_refused_before_anything_is_switched(dialect: str) -> None:
    async def test(rack: Rack) -> None:
        with pytest.raises(Refused, match=r"has no outlet 9 \(it lists 1,2,3,4,5,6,7,8\)"):
            await rack.ac_after(rack.path(5, 9), PowerAction.OFF)
        assert rack.switched() == [0] * 8
        assert await rack.ac_after(rack.path(), PowerAction.STATUS) is PowerState.ON

    on_rack(dialect, test)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_two_devices_on_one_pdu_take_turns_in_one_shell(dialect: str) -> None:
    async def test(rack: Rack) -> None:
        states = await asyncio.gather(
            rack.ac_after(rack.path(5, 6), PowerAction.OFF),
            rack.ac_after(rack.path(7), PowerAction.OFF),
            rack.ac_after(rack.path(5, 6), PowerAction.STATUS),
            rack.ac_after(rack.path(7), PowerAction.ON),
        )
        assert list(states) == [PowerState.OFF, PowerState.OFF, PowerState.OFF, PowerState.ON]
        assert rack.pdu.outlets[7].on
        assert rack.pdu.outlets[7].switched == 2
        assert rack.logins == [USER]

    on_rack(dialect, test)


def test_a_pdu_that_dropped_the_shell_gets_a_fresh_one() -> None:
    async def test(rack: Rack) -> None:
        channels: list[asyncssh.SSHServerChannel[bytes]] = []
        make = rack.pdu.session

        def session(login: str) -> asyncssh.SSHServerSession[bytes]:
            made = make(login)
            connected = made.connection_made

            def recorded(chan: asyncssh.SSHServerChannel[bytes]) -> None:
                channels.append(chan)
                connected(chan)

            made.connection_made = recorded  # type: ignore[method-assign]
            return made

        rack.pdu.session = session  # type: ignore[method-assign]
        await rack.ac_after(rack.path(), PowerAction.STATUS)
        channels[0].close()  # the PDU logs an idle session out
        await asyncio.sleep(0.05)
        assert await rack.ac_after(rack.path(), PowerAction.OFF) is PowerState.OFF
        assert rack.logins == [USER, USER]

    on_rack("raritan_px", test)


def test_an_idle_shell_is_closed_and_the_next_order_logs_in_again() -> None:
    async def test(rack: Rack) -> None:
        await rack.ac_after(rack.path(), PowerAction.STATUS)
        await asyncio.sleep(0.15)
        assert await rack.ac_after(rack.path(), PowerAction.STATUS) is PowerState.ON
        assert rack.logins == [USER, USER]

    on_rack("apc", test, idle=0.05)


def test_a_different_host_key_or_password_is_refused() -> None:
    other = host_key("impostor").get_fingerprint("sha256")

    async def test(rack: Rack) -> None:
        shown = f"pinned {other}, shown {rack.pdu.fingerprint};"
        with pytest.raises(HostKeyMismatch, match=re.escape(shown)):
            await rack.ac_after(rack.path(host_key=other), PowerAction.OFF)
        assert rack.logins == []
        with pytest.raises(AuthFailed, match=r"PDU .* refused the password for apc;"):
            await rack.ac_after(rack.path(password="wrong"), PowerAction.OFF)
        assert rack.switched() == [0] * 8

    on_rack("apc", test)


def test_the_runner_cycles_a_server_whose_only_power_path_is_its_pdu() -> None:
    """The outlets are its own power control here; the result claims AC, not the machine."""

    async def test(rack: Rack) -> None:
        reports: list[Report] = []

        async def sink(report: Report) -> None:
            reports.append(report)

        runner = Runner({"pdu_outlet": rack.driver}, sink)
        runner.submit(PowerOrder("t1", "web05", "a1", PowerAction.CYCLE, (rack.path(),)))
        for _ in range(100):
            if reports and reports[-1].status is not TaskStatus.RUNNING:
                break
            await asyncio.sleep(0.05)
        final = reports[-1]
        assert final.status is TaskStatus.SUCCEEDED, final.message
        assert final.power_state is PowerState.UNKNOWN
        assert final.path == "pdu_outlet"
        assert final.message == (
            f"outlets 5,6 cycled (AC cut and restored) via pdu_outlet {rack.path().endpoint}; "
            "now on; the machine's own power state cannot be read: it has no BMC path"
        )
        assert rack.switched() == [0, 0, 0, 0, 1, 1, 0, 0]

    on_rack("raritan_px", test)
