"""The runner's promises: bounds, retries only where safe, fallback, timeouts, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from agents.drivers.base import (
    AuthFailed,
    DeviceTimeout,
    OutletReading,
    Refused,
    Unreachable,
)
from agents.drivers.fake import FakeDriver
from agents.protocol import (
    Dialect,
    IpmiPath,
    Path,
    PduOutletPath,
    PowerAction,
    PowerOrder,
    PowerState,
    Report,
    SshTarget,
    TaskStatus,
)
from agents.runner import Retry, Runner

A = IpmiPath("10.0.0.1", "u", "p")
B = IpmiPath("10.0.0.2", "u", "p")
FAST = Retry(attempts=3, first_delay=0.01)


class FakeOutlets:
    """Outlets in memory: `on` holds the outlets with AC; `switch` records what it sent."""

    def __init__(self, *on: int) -> None:
        self.on = set(on)
        self.sent: list[PowerAction] = []

    async def switch(self, path: PduOutletPath, action: PowerAction) -> OutletReading:
        before = frozenset(self.on)
        wanted = {PowerAction.ON: True, PowerAction.OFF: False}.get(action)
        sent = action is PowerAction.CYCLE or (
            wanted is not None and any((n in self.on) is not wanted for n in path.outlets)
        )
        if sent:
            self.sent.append(action)
            self.on = self.on | set(path.outlets) if wanted is not False else set()
        return OutletReading(path.outlets, before, frozenset(self.on), sent)


PDU = PduOutletPath(SshTarget("10.0.0.9", "u", "p", Dialect.APC), (5,))


async def _run(
    driver: FakeDriver,
    *orders: PowerOrder,
    per_site: int = 256,
    cancel_after: float | None = None,
    outlets: FakeOutlets | None = None,
) -> dict[str, Report]:
    finals: dict[str, Report] = {}
    done = asyncio.Event()

    async def sink(report: Report) -> None:
        if report.status is not TaskStatus.RUNNING:
            finals[report.task_id] = report
            if len(finals) == len(orders):
                done.set()

    drivers: dict[str, FakeDriver | FakeOutlets] = {"ipmi": driver}
    if outlets is not None:
        drivers["pdu_outlet"] = outlets
    runner = Runner(drivers, sink, per_site=per_site, retry=FAST)
    for order in orders:
        runner.submit(order)
    if cancel_after is not None:
        await asyncio.sleep(cancel_after)
        for order in orders:
            runner.cancel(order.task_id)
    await asyncio.wait_for(done.wait(), 10)
    return finals


def _order(task: str, action: PowerAction, *paths: Path, timeout: float = 5) -> PowerOrder:
    return PowerOrder(task, "web01", "bj", action, paths, timeout)


def test_status_is_retried_but_a_cycle_is_not() -> None:
    driver = FakeDriver()
    driver.machine(A).power = PowerState.ON
    driver.machine(A).fail = DeviceTimeout("no reply")
    finals = asyncio.run(
        _run(driver, _order("1", PowerAction.STATUS, A), _order("2", PowerAction.CYCLE, A))
    )
    assert (finals["1"].status, finals["1"].attempts) == (TaskStatus.FAILED, 3)
    assert (finals["2"].status, finals["2"].attempts) == (TaskStatus.FAILED, 1)


def test_a_device_that_never_answered_is_not_asked_again() -> None:
    """pyghmi retransmitted through the whole login already: a dead BMC fails in seconds."""
    driver = FakeDriver()
    driver.machine(A).fail = Unreachable("BMC 10.0.0.1:623 did not answer within 3 s")
    finals = asyncio.run(_run(driver, _order("1", PowerAction.STATUS, A)))
    assert (finals["1"].status, finals["1"].attempts) == (TaskStatus.FAILED, 1)


def test_fallback_only_when_nothing_was_done() -> None:
    driver = FakeDriver()
    driver.machine(A).fail = AuthFailed("BMC 10.0.0.1:623 rejected the password")
    driver.machine(B).power = PowerState.ON
    finals = asyncio.run(_run(driver, _order("1", PowerAction.CYCLE, A, B)))
    assert finals["1"].status is TaskStatus.SUCCEEDED
    assert finals["1"].path == "ipmi"
    assert "rejected the password" in finals["1"].message
    assert driver.machine(B).actions == ["cycle"]

    driver = FakeDriver()
    driver.machine(A).power = PowerState.ON
    driver.machine(A).fail = DeviceTimeout("the cycle may have run")
    finals = asyncio.run(_run(driver, _order("1", PowerAction.CYCLE, A, B)))
    assert finals["1"].status is TaskStatus.FAILED
    assert driver.machine(B).actions == []  # never a second cycle through another path


def test_a_device_that_answered_and_refused_is_not_overruled() -> None:
    """A BMC's 0xD5 is its answer: no other path, and no outlet, acts in its place."""
    driver = FakeDriver()
    driver.machine(A).fail = Refused("BMC 10.0.0.1:623 refused Chassis Control: 0xD5")
    outlets = FakeOutlets(5)
    finals = asyncio.run(_run(driver, _order("1", PowerAction.OFF, A, B, PDU), outlets=outlets))
    assert finals["1"].status is TaskStatus.FAILED
    assert (
        finals["1"].message == "ipmi 10.0.0.1:623: BMC 10.0.0.1:623 refused Chassis Control: 0xD5"
    )
    assert driver.machine(B).actions == []
    assert outlets.sent == []


def test_unreachable_falls_back_for_any_action() -> None:
    driver = FakeDriver()
    driver.machine(A).fail = Unreachable("BMC 10.0.0.1:623 did not answer")
    driver.machine(B).power = PowerState.ON
    finals = asyncio.run(_run(driver, _order("1", PowerAction.RESET, A, B)))
    assert finals["1"].status is TaskStatus.SUCCEEDED
    assert finals["1"].power_state is PowerState.ON


@pytest.mark.parametrize("action", [PowerAction.CYCLE, PowerAction.RESET])
def test_a_cycle_or_reset_of_a_machine_that_is_off_powers_it_on(action: PowerAction) -> None:
    driver = FakeDriver()
    finals = asyncio.run(_run(driver, _order("1", action, A)))
    assert finals["1"].status is TaskStatus.SUCCEEDED
    assert finals["1"].power_state is PowerState.ON
    assert finals["1"].message == (
        f"the machine was off, so {action} powered it on via ipmi 10.0.0.1:623; power is on"
    )
    assert driver.machine(A).actions == ["on"]


def test_an_outlet_never_stands_in_for_a_cycle_of_a_machine_with_a_bmc() -> None:
    """An outlet cycle is an AC cut: harsher than the cycle asked of a dead BMC."""
    driver = FakeDriver()
    driver.machine(A).fail = Unreachable("BMC 10.0.0.1:623 did not answer within 3 s")
    outlets = FakeOutlets(5)
    finals = asyncio.run(_run(driver, _order("1", PowerAction.CYCLE, A, PDU), outlets=outlets))
    assert finals["1"].status is TaskStatus.FAILED
    assert outlets.sent == []
    assert finals["1"].message.endswith(
        "pdu_outlet 10.0.0.9:22 not used: an outlet cycle cuts AC, harsher than the cycle "
        "asked of the machine's BMC"
    )


def test_an_outlet_listed_first_still_leaves_a_cycle_to_the_bmc() -> None:
    driver = FakeDriver()
    driver.machine(A).power = PowerState.ON
    outlets = FakeOutlets(5)
    finals = asyncio.run(_run(driver, _order("1", PowerAction.CYCLE, PDU, A), outlets=outlets))
    assert (finals["1"].status, finals["1"].path) == (TaskStatus.SUCCEEDED, "ipmi")
    assert outlets.sent == []
    assert driver.machine(A).actions == ["cycle"]


def test_an_outlet_already_on_claims_ac_not_the_machine() -> None:
    """The BMC is dead and the outlet is on: the server may well be off."""
    driver = FakeDriver()
    driver.machine(A).fail = Unreachable("BMC 10.0.0.1:623 did not answer within 3 s")
    outlets = FakeOutlets(5)
    finals = asyncio.run(_run(driver, _order("1", PowerAction.ON, A, PDU), outlets=outlets))
    assert finals["1"].status is TaskStatus.SUCCEEDED
    assert finals["1"].power_state is PowerState.UNKNOWN
    assert finals["1"].path == "pdu_outlet"
    assert finals["1"].message == (
        "ipmi 10.0.0.1:623: BMC 10.0.0.1:623 did not answer within 3 s; outlet 5 already on via "
        "pdu_outlet 10.0.0.9:22; nothing was switched; the machine's own power state cannot be "
        "read: no BMC path answered"
    )
    assert outlets.sent == []


def test_an_outlet_switched_off_leaves_the_machine_off() -> None:
    driver = FakeDriver()
    driver.machine(A).fail = Unreachable("BMC 10.0.0.1:623 did not answer within 3 s")
    outlets = FakeOutlets(5)
    finals = asyncio.run(_run(driver, _order("1", PowerAction.OFF, A, PDU), outlets=outlets))
    assert finals["1"].power_state is PowerState.OFF
    assert finals["1"].message.endswith(
        "outlet 5 switched off via pdu_outlet 10.0.0.9:22; now off; without AC the machine is off"
    )
    assert outlets.sent == [PowerAction.OFF]


def test_timeout_and_cancel_end_with_one_report_each() -> None:
    driver = FakeDriver()
    driver.machine(A).delay = 5
    finals = asyncio.run(_run(driver, _order("1", PowerAction.ON, A, timeout=0.2)))
    assert finals["1"].status is TaskStatus.TIMEOUT
    assert "0.2 s" in finals["1"].message
    finals = asyncio.run(_run(driver, _order("2", PowerAction.ON, A), cancel_after=0.05))
    assert finals["2"].status is TaskStatus.CANCELLED


def test_one_request_per_bmc_and_a_bound_per_site() -> None:
    driver = FakeDriver()
    inflight = peak = 0
    original = driver.power

    async def counting(path: Path, action: PowerAction) -> PowerState:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            await asyncio.sleep(0.01)
            return await original(path, action)
        finally:
            inflight -= 1

    driver.power = counting  # type: ignore[method-assign]
    same_bmc = [_order(str(n), PowerAction.STATUS, A) for n in range(5)]
    asyncio.run(_run(driver, *same_bmc))
    assert peak == 1
    peak = 0
    many = [
        _order(str(n), PowerAction.STATUS, IpmiPath(f"10.1.0.{n}", "u", "p")) for n in range(20)
    ]
    asyncio.run(_run(driver, *many, per_site=4))
    assert peak == 4


def test_no_path_is_a_clear_failure() -> None:
    finals = asyncio.run(_run(FakeDriver(), _order("1", PowerAction.ON)))
    assert finals["1"].status is TaskStatus.FAILED
    assert "no usable power path" in finals["1"].message


def test_a_path_without_a_password_is_never_tried() -> None:
    """A secret dropped by the central must not become an empty login at the new address."""
    driver = FakeDriver()
    driver.machine(B).power = PowerState.ON
    outlets = FakeOutlets(5)
    bare, bare_pdu = (
        IpmiPath("10.0.0.1", "u", ""),
        PduOutletPath(SshTarget("10.0.0.9", "u", "", Dialect.APC), (5,)),
    )
    finals = asyncio.run(_run(driver, _order("1", PowerAction.STATUS, bare, B)))
    assert finals["1"].status is TaskStatus.SUCCEEDED  # an unusable path: the next one acts
    assert (
        "BMC 10.0.0.1:623: no secret set for this path, so nothing was sent" in finals["1"].message
    )
    assert driver.machine(bare).actions == []
    finals = asyncio.run(_run(driver, _order("2", PowerAction.ON, bare_pdu), outlets=outlets))
    assert finals["2"].status is TaskStatus.FAILED
    assert "PDU 10.0.0.9:22: no secret set for its ssh path" in finals["2"].message
    assert outlets.sent == []


def test_polls_queue_apart_from_what_people_asked_for() -> None:
    driver = FakeDriver()
    polls = [
        PowerOrder(f"p{n}", "web", "bj", PowerAction.STATUS, (IpmiPath(f"10.2.0.{n}", "u", "p"),),
                   background=True)
        for n in range(40)
    ]  # fmt: skip
    for order in polls:
        driver.machine(order.paths[0]).delay = 0.2
    asked = _order("user", PowerAction.ON, B)

    async def scenario() -> list[str]:
        order: list[str] = []
        done = asyncio.Event()

        async def sink(report: Report) -> None:
            if report.status is not TaskStatus.RUNNING:
                order.append(report.task_id)
                if len(order) == len(polls) + 1:
                    done.set()

        runner = Runner({"ipmi": driver}, sink, per_site=8, retry=FAST)
        for poll in polls:
            runner.submit(poll)
        runner.submit(asked)
        await asyncio.wait_for(done.wait(), 30)
        return order

    # 40 polls of 0.2 s share 2 poll slots (4 s); the operator's order does not queue behind them
    assert asyncio.run(scenario()).index("user") < 4
