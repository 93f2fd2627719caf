"""The agent's runner: orders in, reports out, with bounds, timeouts, retries and fallback.

Bounds: a site never has more than `per_site` tasks talking to devices at once, and one
endpoint (a BMC) gets one request at a time, because BMCs serve a handful of sessions and
queue or drop the rest. Every task ends in exactly one final report.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from agents.drivers.base import (
    BootDriver,
    DeviceTimeout,
    DriverError,
    PowerDriver,
    Unreachable,
)
from agents.protocol import (
    IDEMPOTENT,
    BootOrder,
    Order,
    Path,
    PowerAction,
    PowerOrder,
    PowerState,
    Report,
    TaskStatus,
)

log = logging.getLogger(__name__)

ReportSink = Callable[[Report], Awaitable[None]]


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
        drivers: Mapping[str, Driver],
        report: ReportSink,
        *,
        per_site: int = 256,
        retry: Retry | None = None,
    ) -> None:
        self._drivers = drivers
        self._report = report
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
        background = isinstance(order, PowerOrder) and order.background
        return (self._polls if background else self._sites)[order.site]

    async def _run(self, order: Order) -> None:
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

    async def _fallback(self, order: Order, outcome: _Outcome) -> None:
        """Try each path in order; move on only when the failure proves nothing was done."""
        if not order.paths:
            outcome.message = "the device has no power path (ipmi or redfish); add one"
            return
        for number, path in enumerate(order.paths, 1):
            driver = self._drivers.get(path.kind)
            if driver is None:
                outcome.tried.append(f"{path.kind}: no driver for this path kind on the agent")
                continue
            try:
                last = number == len(order.paths)  # retry the last path; fall back sooner
                state = await self._attempt(driver, order, path, outcome, retries=last)
            except DriverError as exc:
                outcome.tried.append(f"{path.kind} {path.endpoint}: {exc}")
                if isinstance(exc, DeviceTimeout) and not _repeatable(order):
                    break  # it may have run: another path could do it twice
                continue
            outcome.status = TaskStatus.SUCCEEDED
            outcome.power_state = state
            outcome.path = path.kind
            outcome.message = _joined(outcome.tried, _done(order, path, state))
            return
        outcome.message = "; ".join(outcome.tried)

    async def _attempt(
        self, driver: Driver, order: Order, path: Path, outcome: _Outcome, *, retries: bool
    ) -> PowerState | None:
        lock = self._endpoints.setdefault(path.endpoint, asyncio.Lock())
        delay = self._retry.first_delay
        attempts = self._retry.attempts if retries else 1
        for attempt in range(1, attempts + 1):
            outcome.attempts += 1
            try:
                async with lock:
                    state = await _act(driver, order, path)
                    return await _settle(driver, order, path, state)
            except (Unreachable, DeviceTimeout):
                if not _repeatable(order) or attempt == attempts:
                    raise
            await asyncio.sleep(delay)
            delay *= self._retry.factor
        raise AssertionError("unreachable")


async def _act(driver: Driver, order: Order, path: Path) -> PowerState | None:
    if isinstance(order, PowerOrder):
        return await driver.power(path, order.action)
    await driver.set_boot(path, order.boot, order.persistent)
    return None


async def _settle(
    driver: Driver, order: Order, path: Path, state: PowerState | None
) -> PowerState | None:
    """On and off end when the BMC reports the new state (a server takes a moment to start).

    Soft-off is left to the OS, which may take minutes or refuse: it ends when asked.
    """
    target = _TARGET.get(order.action) if isinstance(order, PowerOrder) else None
    delay = 0.1
    while target is not None and state is not target:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
        state = await driver.power(path, PowerAction.STATUS)
    return state


_TARGET = {PowerAction.ON: PowerState.ON, PowerAction.OFF: PowerState.OFF}


def _repeatable(order: Order) -> bool:
    return isinstance(order, BootOrder) or order.action in IDEMPOTENT


def _done(order: Order, path: Path, state: PowerState | None) -> str:
    where = f"via {path.kind} {path.endpoint}"
    if isinstance(order, BootOrder):
        when = "every boot" if order.persistent else "the next boot"
        return f"boot device set to {order.boot} for {when} {where}"
    if order.action is PowerAction.STATUS:
        return f"power is {state} ({where})"
    return f"{order.action} done {where}; power is {state}"


def _joined(tried: list[str], last: str) -> str:
    """Earlier paths' failures first, so the fallback is visible in the message."""
    return "; ".join([*tried, last]) if tried else last
