"""The agent's runner: orders in, reports out, with bounds, timeouts, retries and fallback.

Bounds: a site never has more than `per_site` tasks talking to devices at once, and one
endpoint (a BMC) gets one request at a time, because BMCs serve a handful of sessions and
queue or drop the rest. Every task ends in exactly one final report.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from agents.drivers.base import (
    UNUSABLE,
    BootDriver,
    DeviceTimeout,
    DriverError,
    GuestDriver,
    HealthDriver,
    OutletDriver,
    OutletReading,
    PowerDriver,
    PoweredOff,
    Unsupported,
    require_secret,
)
from agents.protocol import (
    IDEMPOTENT,
    Answer,
    BootOrder,
    GuestsOrder,
    GuestsReport,
    HealthData,
    HealthOrder,
    HealthRead,
    HealthReport,
    Order,
    Path,
    PathKind,
    PduOutletPath,
    PowerAction,
    PowerOrder,
    PowerState,
    Report,
    TaskStatus,
)

log = logging.getLogger(__name__)

ReportSink = Callable[[Report], Awaitable[None]]
AnswerSink = Callable[[Answer], Awaitable[None]]


class Driver(PowerDriver, BootDriver, Protocol):
    """A driver for one path kind; the runner needs power and boot from each."""


@dataclass
class Retry:
    """Back-off for retriable failures of actions that are safe to repeat."""

    attempts: int = 3
    first_delay: float = 0.5
    factor: float = 2.0


@dataclass
class _Outcome:
    status: TaskStatus
    power_state: PowerState | None = None
    path: str | None = None
    message: str = ""
    attempts: int = 0
    tried: list[str] = field(default_factory=list)


class Runner:
    def __init__(
        self,
        drivers: Mapping[str, Driver | OutletDriver],
        report: ReportSink,
        answered: AnswerSink | None = None,
        *,
        per_site: int = 256,
        retry: Retry | None = None,
    ) -> None:
        self._drivers = drivers
        self._report = report
        self._answered = answered  # where a question's answer goes
        self._per_site = per_site
        self._retry = retry or Retry()
        self._sites: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self._per_site)
        )
        # Polls get a quarter of the site's slots in a queue of their own, so a poll round over
        # thousands of devices never stands between an operator and the device they asked for.
        self._polls: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(max(1, self._per_site // 4))
        )
        self._endpoints: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def running(self) -> int:
        return len(self._tasks)

    def submit(self, order: Order) -> None:
        """Start the order; its reports go to the sink. A task id already running is ignored."""
        if order.task_id in self._tasks:
            return
        task = asyncio.create_task(self._run(order), name=f"task-{order.task_id}")
        self._tasks[order.task_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(order.task_id, None))

    def cancel(self, task_id: str) -> bool:
        """Stop a task; it reports `cancelled`. False if the runner does not hold it."""
        task = self._tasks.get(task_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def close(self) -> None:
        """Cancel everything in flight and wait for the final reports."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _slots(self, order: Order) -> asyncio.Semaphore:
        background = isinstance(order, PowerOrder | HealthOrder) and order.background
        return (self._polls if background else self._sites)[order.site]

    async def _run(self, order: Order) -> None:
        if isinstance(order, GuestsOrder | HealthOrder):
            answer = await (
                self._guests(order) if isinstance(order, GuestsOrder) else self._health(order)
            )
            if self._answered is not None:
                await self._answered(answer)
            return
        outcome = _Outcome(TaskStatus.FAILED)
        try:
            async with self._slots(order):  # the timeout starts when the device is asked
                await self._report(Report(order.task_id, TaskStatus.RUNNING))
                async with asyncio.timeout(order.timeout):
                    await self._fallback(order, outcome)
        except TimeoutError:
            outcome.status = TaskStatus.TIMEOUT
            outcome.message = _joined(
                outcome.tried, f"no result within {order.timeout:g} s (the task's timeout)"
            )
        except asyncio.CancelledError:
            outcome.status = TaskStatus.CANCELLED
            outcome.message = _joined(outcome.tried, "cancelled before the device answered")
        except Exception as exc:  # a driver bug must still end the task with a report
            log.exception("task %s failed unexpectedly", order.task_id)
            outcome = _Outcome(TaskStatus.FAILED, message=f"internal error in the agent: {exc}")
        await self._report(
            Report(
                order.task_id,
                outcome.status,
                outcome.power_state,
                outcome.path,
                outcome.message,
                outcome.attempts,
            )
        )

    async def _guests(self, order: GuestsOrder) -> GuestsReport:
        """The host's guests, or why not: one path (the host's ssh), no fallback, no retry."""
        where = f"hypervisor {order.host.endpoint}"
        failed = TaskStatus.FAILED
        try:
            async with self._slots(order):
                await self._report(Report(order.task_id, TaskStatus.RUNNING))
                driver = self._drivers.get(PathKind.LIBVIRT)
                if not isinstance(driver, GuestDriver):
                    return GuestsReport(order.task_id, failed, message="no guest driver here")
                require_secret(order.host)
                async with asyncio.timeout(order.timeout):
                    guests = tuple(await driver.guests(order.host))
        except TimeoutError:
            message = f"{where}: no list of guests within {order.timeout:g} s"
            return GuestsReport(order.task_id, TaskStatus.TIMEOUT, message=message)
        except asyncio.CancelledError:
            return GuestsReport(order.task_id, TaskStatus.CANCELLED, message="cancelled")
        except DriverError as exc:
            return GuestsReport(order.task_id, failed, message=f"{where}: {exc}")
        except Exception as exc:  # a driver bug must still end the task with a report
            log.exception("task %s failed unexpectedly", order.task_id)
            return GuestsReport(order.task_id, failed, message=f"internal error: {exc}")
        said = f"{len(guests)} guest{'' if len(guests) == 1 else 's'} on {where}"
        return GuestsReport(order.task_id, TaskStatus.SUCCEEDED, guests, said)

    async def _health(self, order: HealthOrder) -> HealthReport:
        """Read over the first path that can be used at all; a BMC that answered and refused is
        not overruled by another path (its refusal is the answer)."""
        tried: list[str] = []
        failed = TaskStatus.FAILED
        try:
            async with self._slots(order):
                await self._report(Report(order.task_id, TaskStatus.RUNNING))
                async with asyncio.timeout(order.timeout):
                    for path in order.paths:
                        driver = self._drivers.get(path.kind)
                        if not isinstance(driver, HealthDriver):
                            tried.append(f"{path.kind}: no health driver for this path kind")
                            continue
                        try:
                            require_secret(path)
                            async with self._endpoints.setdefault(path.endpoint, asyncio.Lock()):
                                data = await driver.health(path, order.read)
                        except DriverError as exc:
                            tried.append(f"{path.kind} {path.endpoint}: {exc}")
                            if isinstance(exc, UNUSABLE):
                                continue
                            break
                        said = _joined(tried, _read_said(order.read, data, path))
                        return HealthReport(
                            order.task_id, TaskStatus.SUCCEEDED, data, path.kind, said
                        )
        except TimeoutError:
            said = _joined(tried, f"no answer within {order.timeout:g} s (the read's timeout)")
            return HealthReport(order.task_id, TaskStatus.TIMEOUT, message=said)
        except asyncio.CancelledError:
            return HealthReport(order.task_id, TaskStatus.CANCELLED, message="cancelled")
        except Exception as exc:  # a driver bug must still end the task with a report
            log.exception("task %s failed unexpectedly", order.task_id)
            return HealthReport(order.task_id, failed, message=f"internal error: {exc}")
        if not order.paths:
            tried.append("the device has no BMC path (ipmi or redfish) to read its health from")
        return HealthReport(order.task_id, failed, message="; ".join(tried))

    async def _fallback(self, order: PowerOrder | BootOrder, outcome: _Outcome) -> None:
        """Try each path in order; move on only when a path could not be used at all.

        A device that answered and refused is not overruled by another path, and an outlet
        never stands in for an action it would make harsher (docs/power.md, "Fallback").
        """
        if not order.paths:
            outcome.message = (
                "the device has no usable power path (ipmi, redfish, an outlet of a PDU that has "
                "an ssh path, or a guest's libvirt path); add one"
            )
            return
        for number, path in enumerate(order.paths, 1):
            driver = self._drivers.get(path.kind)
            if driver is None:
                outcome.tried.append(f"{path.kind}: no driver for this path kind on the agent")
                continue
            if (why := _not_for(order, path)) is not None:
                outcome.tried.append(f"{path.kind} {path.endpoint} not used: {why}")
                continue
            try:
                require_secret(path)
                last = number == len(order.paths)  # retry the last path; fall back sooner
                state, done = await self._attempt(driver, order, path, outcome, retries=last)
            except DriverError as exc:
                outcome.tried.append(f"{path.kind} {path.endpoint}: {exc}")
                if isinstance(exc, UNUSABLE):
                    continue
                if isinstance(exc, DeviceTimeout) and _repeatable(order):
                    continue  # asking again elsewhere cannot do harm
                break  # it answered and refused, or it may have run: stop here
            outcome.status = TaskStatus.SUCCEEDED
            outcome.power_state = state
            outcome.path = path.kind
            outcome.message = _joined(outcome.tried, done)
            return
        outcome.message = "; ".join(outcome.tried)

    async def _attempt(
        self,
        driver: Driver | OutletDriver,
        order: PowerOrder | BootOrder,
        path: Path,
        outcome: _Outcome,
        *,
        retries: bool,
    ) -> tuple[PowerState | None, str]:
        """The path's result and its message; repeats only a device that fell silent.

        A device that never answered (`Unreachable`: pyghmi already retransmitted through the
        whole login) is not asked again: its failure is reported within seconds.
        """
        lock = self._endpoints.setdefault(path.endpoint, asyncio.Lock())
        delay = self._retry.first_delay
        attempts = self._retry.attempts if retries else 1
        for attempt in range(1, attempts + 1):
            outcome.attempts += 1
            try:
                async with lock:
                    return await _act(driver, order, path)
            except DeviceTimeout:
                if not _repeatable(order) or attempt == attempts:
                    raise
            await asyncio.sleep(delay)
            delay *= self._retry.factor
        raise AssertionError("unreachable")


async def _act(
    driver: Driver | OutletDriver, order: PowerOrder | BootOrder, path: Path
) -> tuple[PowerState | None, str]:
    where = f"via {path.kind} {path.endpoint}"
    if isinstance(path, PduOutletPath):
        if not isinstance(driver, OutletDriver):
            raise Unsupported(f"the agent's {path.kind} driver cannot switch outlets")
        assert isinstance(order, PowerOrder)  # `_not_for` keeps boot orders off outlets
        reading = await driver.switch(path, order.action)
        return _outlet_result(order, reading, where, bmc=_has_bmc(order))
    driver = cast(Driver, driver)  # every path kind but an outlet has a power driver
    if isinstance(order, BootOrder):
        await driver.set_boot(path, order.boot, order.persistent)
        when = "every boot" if order.persistent else "the next boot"
        return None, f"boot device set to {order.boot} for {when} {where}"
    action = order.action
    try:
        state = await _settle(driver, action, path, await driver.power(path, action))
    except PoweredOff:  # a cycle or reset of a machine that is off: nothing was sent
        state = await _settle(
            driver, PowerAction.ON, path, await driver.power(path, PowerAction.ON)
        )
        return state, f"the machine was off, so {action} powered it on {where}; power is {state}"
    if action is PowerAction.STATUS:
        return state, f"power is {state} ({where})"
    return state, f"{action} done {where}; power is {state}"


async def _settle(driver: Driver, action: PowerAction, path: Path, state: PowerState) -> PowerState:
    """On and off end when the BMC reports the new state (a server takes a moment to start).

    Soft-off is left to the OS, which may take minutes or refuse: it ends when asked.
    """
    target = _TARGET.get(action)
    delay = 0.1
    while target is not None and state is not target:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
        state = await driver.power(path, PowerAction.STATUS)
    return state


_TARGET = {PowerAction.ON: PowerState.ON, PowerAction.OFF: PowerState.OFF}


def _repeatable(order: PowerOrder | BootOrder) -> bool:
    return isinstance(order, BootOrder) or order.action in IDEMPOTENT


def _has_bmc(order: PowerOrder | BootOrder) -> bool:
    return any(not isinstance(path, PduOutletPath) for path in order.paths)


def _not_for(order: PowerOrder | BootOrder, path: Path) -> str | None:
    """Why an outlet path must not do this order, if it must not.

    Outlets cut or restore AC. That serves `on`, `off` and a `status` read of AC; a `cycle`
    only for a device without a BMC path (a switch: the outlet is its power control). For a
    machine with a BMC, an outlet cycle would turn the cycle asked into an AC cut.
    """
    if not isinstance(path, PduOutletPath):
        return None
    if isinstance(order, BootOrder):
        return "an outlet cannot set a boot device"
    if order.action in IDEMPOTENT or (order.action is PowerAction.CYCLE and not _has_bmc(order)):
        return None
    if order.action is PowerAction.CYCLE:
        return "an outlet cycle cuts AC, harsher than the cycle asked of the machine's BMC"
    return f"an outlet can only switch AC on or off, not {order.action}"


def _outlet_result(
    order: PowerOrder, reading: OutletReading, where: str, *, bmc: bool
) -> tuple[PowerState, str]:
    """What an outlet may claim: AC on or off. A machine without AC is off; with AC, unknown."""
    outlets = "outlet" + ("s " if len(reading.outlets) > 1 else " ") + _numbers(reading.outlets)
    on = reading.on_after
    if not on:
        ac = "off"
    elif on == frozenset(reading.outlets):
        ac = "on"
    else:
        ac = f"partly on ({_numbers(sorted(on))} on)"
    if order.action is PowerAction.STATUS:
        said = f"{outlets} {ac} (AC) {where}"
    elif order.action is PowerAction.CYCLE:
        said = f"{outlets} cycled (AC cut and restored) {where}; now {ac}"
    elif reading.sent:
        said = f"{outlets} switched {order.action} {where}; now {ac}"
    else:
        said = f"{outlets} already {ac} {where}; nothing was switched"
    if not on:
        return PowerState.OFF, f"{said}; without AC the machine is off"
    why = "no BMC path answered" if bmc else "it has no BMC path"
    return PowerState.UNKNOWN, f"{said}; the machine's own power state cannot be read: {why}"


def _read_said(read: HealthRead, data: HealthData, path: Path) -> str:
    where = f"via {path.kind} {path.endpoint}"
    if read is HealthRead.SENSORS:
        return f"{_count(len(data.sensors), 'sensor')} read {where}"
    if read is HealthRead.INVENTORY:
        return f"{_count(len(data.inventory), 'FRU')} read {where}"
    if read is HealthRead.CLEAR_EVENTS:
        return f"event log cleared {where}; it held {_count(len(data.events), 'entry', 'entries')}"
    return f"{_count(len(data.events), 'event log entry', 'event log entries')} read {where}"


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"


def _numbers(outlets: Sequence[int]) -> str:
    return ",".join(map(str, outlets))


def _joined(tried: list[str], last: str) -> str:
    """Earlier paths' failures first, so the fallback is visible in the message."""
    return "; ".join([*tried, last]) if tried else last
