"""The Redfish driver against the Redfish simulator: actions, boot, pinning, failures, bounds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import pytest

from agents.drivers.base import (
    AuthFailed,
    DeviceTimeout,
    PoweredOff,
    Refused,
    Unreachable,
    Unsupported,
)
from agents.drivers.redfish import RedfishDriver
from agents.protocol import (
    BootDevice,
    IpmiPath,
    PowerAction,
    PowerOrder,
    PowerState,
    RedfishPath,
    Report,
    TaskStatus,
)
from agents.runner import Runner
from sim.machine import BootDevice as SimBoot
from sim.machine import BootOverride, Power
from sim.redfish import RedfishFleet
from tests.sim.console import free_tcp_ports
from tests.sim.test_redfish_sim import PASSWORD, USER, curl, start_fleet


@dataclass
class Bench:
    fleet: RedfishFleet
    port: int
    driver: RedfishDriver
    path: RedfishPath

    async def settle(self, power: PowerState) -> None:
        for _ in range(50):
            if await self.driver.power(self.path, PowerAction.STATUS) is power:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"power never became {power}")


def on_bench(
    test: Callable[[Bench], Awaitable[None]],
    *,
    request_timeout: float = 1.0,
    call_timeout: float = 5.0,
) -> None:
    async def main() -> None:
        fleet = await start_fleet()
        port = fleet.ports[0]
        driver = RedfishDriver(request_timeout=request_timeout, call_timeout=call_timeout)
        path = RedfishPath(fleet.url(port), USER, PASSWORD, fleet.fingerprint)
        try:
            await test(Bench(fleet, port, driver, path))
        finally:
            await driver.close()
            await fleet.close()

    asyncio.run(main())


def colons(digest: str) -> str:
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()


def test_every_power_action_reaches_the_machine_on_one_session() -> None:
    async def test(bench: Bench) -> None:
        driver, path, machine = bench.driver, bench.path, bench.fleet.machine(bench.port)
        assert await driver.power(path, PowerAction.STATUS) is PowerState.OFF
        await driver.power(path, PowerAction.ON)
        await bench.settle(PowerState.ON)
        assert await driver.power(path, PowerAction.CYCLE) is PowerState.ON
        await bench.settle(PowerState.ON)
        assert await driver.power(path, PowerAction.RESET) is PowerState.ON
        assert await driver.power(path, PowerAction.NMI) is PowerState.ON
        await driver.power(path, PowerAction.SOFT)
        await bench.settle(PowerState.OFF)
        await driver.power(path, PowerAction.ON)
        await bench.settle(PowerState.ON)
        assert await driver.power(path, PowerAction.OFF) is PowerState.OFF
        counted = {"on": 2, "off": 1, "cycle": 1, "reset": 1, "diag": 1, "soft": 1}
        assert machine.counters == counted
        assert bench.fleet.bmc(bench.port).logins == 1  # the X-Auth-Token was reused

    on_bench(test)


def test_the_runner_settles_an_on_order_through_the_driver() -> None:
    async def test(bench: Bench) -> None:
        reports: list[Report] = []
        finished = asyncio.Event()

        async def sink(report: Report) -> None:
            reports.append(report)
            if report.status is not TaskStatus.RUNNING:
                finished.set()

        runner = Runner({"redfish": bench.driver}, sink)
        runner.submit(PowerOrder("t1", "srv1", "site", PowerAction.ON, (bench.path,), timeout=5))
        await asyncio.wait_for(finished.wait(), 10)
        assert reports[-1].status is TaskStatus.SUCCEEDED, reports[-1].message
        assert reports[-1].power_state is PowerState.ON
        assert bench.fleet.machine(bench.port).power is Power.ON

    on_bench(test)


def test_boot_bios_once_and_pxe_every_time_without_touching_the_boot_mode() -> None:
    async def test(bench: Bench) -> None:
        machine = bench.fleet.machine(bench.port)
        system = f"{bench.fleet.url(bench.port)}/redfish/v1/Systems/1"
        await bench.driver.set_boot(bench.path, BootDevice.BIOS, persistent=False)
        assert machine.boot == BootOverride(SimBoot.BIOS, persistent=False, efi=False)
        boot = (await curl(system)).body["Boot"]
        assert (boot["BootSourceOverrideEnabled"], boot["BootSourceOverrideTarget"]) == (
            "Once",
            "BiosSetup",
        )
        await bench.driver.set_boot(bench.path, BootDevice.PXE, persistent=True)
        assert machine.boot == BootOverride(SimBoot.PXE, persistent=True, efi=False)
        boot = (await curl(system)).body["Boot"]
        assert (boot["BootSourceOverrideEnabled"], boot["BootSourceOverrideTarget"]) == (
            "Continuous",
            "Pxe",
        )
        assert boot["BootSourceOverrideMode"] == "Legacy"
        await bench.driver.set_boot(bench.path, BootDevice.DEFAULT, persistent=False)
        assert machine.boot == BootOverride()

    on_bench(test)


def test_an_action_the_bmc_does_not_allow_is_unsupported_and_not_sent() -> None:
    async def test(bench: Bench) -> None:
        bench.fleet.bmc(bench.port).resets.remove("Nmi")
        bench.fleet.machine(bench.port).press(Power.ON)
        with pytest.raises(Unsupported, match="does not allow ResetType Nmi"):
            await bench.driver.power(bench.path, PowerAction.NMI)
        assert bench.fleet.machine(bench.port).counters["diag"] == 0

    on_bench(test)


def test_the_bmcs_refusal_is_passed_on_with_its_message() -> None:
    async def test(bench: Bench) -> None:
        with pytest.raises(Refused, match=r"127\.0\.0\.1.*powered off"):
            await bench.driver.power(bench.path, PowerAction.NMI)


def test_a_cycle_of_a_machine_that_is_off_is_not_sent() -> None:
    async def test(bench: Bench) -> None:
        with pytest.raises(PoweredOff, match="the machine is off; cycle was not sent"):
            await bench.driver.power(bench.path, PowerAction.CYCLE)
        assert bench.fleet.machine(bench.port).power is Power.OFF

    on_bench(test)


@pytest.mark.parametrize("fault", ["wrong password", "refused"])
def test_bad_credentials_fail_authentication(fault: str) -> None:
    async def test(bench: Bench) -> None:
        path = bench.path
        if fault == "refused":
            bench.fleet.bmc(bench.port).faults.refuse_password = True
        else:
            path = replace(path, password="wrong")
        with pytest.raises(AuthFailed, match="check the path's user name and password") as caught:
            await bench.driver.power(path, PowerAction.STATUS)
        assert bench.path.url in str(caught.value)

    on_bench(test)


def test_a_fingerprint_with_colons_in_capitals_pins_the_same_certificate() -> None:
    async def test(bench: Bench) -> None:
        path = replace(bench.path, fingerprint=colons(bench.fleet.fingerprint))
        assert await bench.driver.power(path, PowerAction.STATUS) is PowerState.OFF

    on_bench(test)


def test_another_certificate_fails_showing_both_fingerprints() -> None:
    async def test(bench: Bench) -> None:
        path = replace(bench.path, fingerprint="ab" * 32)
        with pytest.raises(AuthFailed, match="mismatch") as caught:
            await bench.driver.power(path, PowerAction.STATUS)
        assert colons("ab" * 32) in str(caught.value)
        assert colons(bench.fleet.fingerprint) in str(caught.value)
        assert bench.fleet.bmc(bench.port).logins == 0  # no password went to the impostor

    on_bench(test)


def test_without_a_fingerprint_nothing_is_trusted_and_the_seen_one_is_shown() -> None:
    async def test(bench: Bench) -> None:
        path = replace(bench.path, fingerprint=None)
        with pytest.raises(AuthFailed, match=r"options\.tls_fingerprint") as caught:
            await bench.driver.power(path, PowerAction.STATUS)
        assert colons(bench.fleet.fingerprint) in str(caught.value)
        assert bench.fleet.bmc(bench.port).logins == 0

    on_bench(test)


def test_nothing_listening_is_unreachable() -> None:
    async def test(bench: Bench) -> None:
        path = replace(bench.path, url=f"https://127.0.0.1:{free_tcp_ports(1)}")
        with pytest.raises(Unreachable, match="connection refused") as caught:
            await bench.driver.power(path, PowerAction.STATUS)
        assert path.url in str(caught.value)

    on_bench(test)


def test_a_mute_bmc_is_unreachable_within_the_request_timeout() -> None:
    async def test(bench: Bench) -> None:
        bench.fleet.bmc(bench.port).faults.mute = True
        started = time.monotonic()
        with pytest.raises(Unreachable, match=r"no answer within 0\.3 s"):
            await bench.driver.power(bench.path, PowerAction.STATUS)
        assert time.monotonic() - started < 1.5

    on_bench(test, request_timeout=0.3)


def test_a_bmc_falling_silent_mid_action_may_have_acted() -> None:
    async def test(bench: Bench) -> None:
        bench.fleet.machine(bench.port).press(Power.ON)
        assert await bench.driver.power(bench.path, PowerAction.STATUS) is PowerState.ON
        bench.fleet.bmc(bench.port).faults.mute = True
        with pytest.raises(DeviceTimeout, match="may or may not have run"):
            await bench.driver.power(bench.path, PowerAction.CYCLE)

    on_bench(test, request_timeout=0.3)


def test_a_slow_bmc_cannot_hold_a_call_beyond_the_call_timeout() -> None:
    async def test(bench: Bench) -> None:
        bench.fleet.bmc(bench.port).faults.slow_ms = 1000
        started = time.monotonic()
        with pytest.raises(DeviceTimeout, match=r"within 0\.3 s"):
            await bench.driver.power(bench.path, PowerAction.STATUS)
        assert time.monotonic() - started < 0.8

    on_bench(test, call_timeout=0.3)


def test_other_paths_and_bad_urls_are_not_for_this_driver() -> None:
    async def test(bench: Bench) -> None:
        with pytest.raises(Unsupported, match="cannot use a ipmi path"):
            await bench.driver.power(IpmiPath("10.0.0.1", "u", "p"), PowerAction.STATUS)
        with pytest.raises(Unsupported, match="not an https"):
            await bench.driver.power(replace(bench.path, url="10.0.0.1"), PowerAction.STATUS)

    on_bench(test)
