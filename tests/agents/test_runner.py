"""The runner's promises: bounds, retries only where safe, fallback, timeouts, cancellation."""

from __future__ import annotations

import asyncio

from agents.drivers.base import AuthFailed, DeviceTimeout, Unreachable
from agents.drivers.fake import FakeDriver
from agents.protocol import (
    IpmiPath,
    Path,
    PowerAction,
    PowerOrder,
    PowerState,
    Report,
    TaskStatus,
)
from agents.runner import Retry, Runner

A = IpmiPath("10.0.0.1", "u", "p")
B = IpmiPath("10.0.0.2", "u", "p")
FAST = Retry(attempts=3, first_delay=0.01)


async def _run(
    driver: FakeDriver, *orders: PowerOrder, per_site: int = 256, cancel_after: float | None = None
) -> dict[str, Report]:
    finals: dict[str, Report] = {}
    done = asyncio.Event()

    async def sink(report: Report) -> None:
        if report.status is not TaskStatus.RUNNING:
            finals[report.task_id] = report
            if len(finals) == len(orders):
                done.set()

    runner = Runner({"ipmi": driver}, sink, per_site=per_site, retry=FAST)
    for order in orders:
        runner.submit(order)
    if cancel_after is not None:
        await asyncio.sleep(cancel_after)
        for order in orders:
            runner.cancel(order.task_id)
    await asyncio.wait_for(done.wait(), 10)
    return finals


def _order(task: str, action: PowerAction, *paths: IpmiPath, timeout: float = 5) -> PowerOrder:
    return PowerOrder(task, "web01", "bj", action, paths, timeout)


def test_status_is_retried_but_a_cycle_is_not() -> None:
    driver = FakeDriver()
    driver.machine(A).fail = DeviceTimeout("no reply")
    finals = asyncio.run(
        _run(driver, _order("1", PowerAction.STATUS, A), _order("2", PowerAction.CYCLE, A))
    )
    assert (finals["1"].status, finals["1"].attempts) == (TaskStatus.FAILED, 3)
    assert (finals["2"].status, finals["2"].attempts) == (TaskStatus.FAILED, 1)


def test_fallback_only_when_nothing_was_done() -> None:
    driver = FakeDriver()
    driver.machine(A).fail = AuthFailed("BMC 10.0.0.1:623 rejected the password")
    finals = asyncio.run(_run(driver, _order("1", PowerAction.CYCLE, A, B)))
    assert finals["1"].status is TaskStatus.SUCCEEDED
    assert finals["1"].path == "ipmi"
    assert "rejected the password" in finals["1"].message
    assert driver.machine(B).actions == ["cycle"]

    driver = FakeDriver()
    driver.machine(A).fail = DeviceTimeout("the cycle may have run")
    finals = asyncio.run(_run(driver, _order("1", PowerAction.CYCLE, A, B)))
    assert finals["1"].status is TaskStatus.FAILED
    assert driver.machine(B).actions == []  # never a second cycle through another path


def test_unreachable_falls_back_for_any_action() -> None:
    driver = FakeDriver()
    driver.machine(A).fail = Unreachable("BMC 10.0.0.1:623 did not answer")
    finals = asyncio.run(_run(driver, _order("1", PowerAction.RESET, A, B)))
    assert finals["1"].status is TaskStatus.SUCCEEDED
    assert finals["1"].power_state is PowerState.ON


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
    assert "no power path" in finals["1"].message


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
