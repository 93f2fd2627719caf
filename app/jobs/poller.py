"""The power poller: every device's power state, reachability and last-seen kept fresh.

Each site is polled every `poll_seconds` (a round never starts while the site's last one is
still out, so a BMC is asked at most once per interval). Devices busy with a job are skipped:
their state is the job's to report. A state that changed without a job is `power.drift`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agents.protocol import PowerAction, PowerOrder, PowerState, Report, TaskStatus
from app.audit.models import EventType
from app.audit.service import SYSTEM, Event, stage
from app.db import utcnow
from app.fleetlink.paths import POWER_PATHS, power_paths, unusable_power
from app.inventory.models import ControlPath, Device, DeviceStatus, PowerStatus, Site
from app.jobs.engine import AgentLink, upsert_power
from app.jobs.models import ACTIVE, Task
from app.uow import unit_of_work
from app.vault import Vault

log = logging.getLogger(__name__)

PREFIX = "poll:"  # poll task ids, told apart from jobs' in logs
POLL_TIMEOUT = 15.0


@dataclass(frozen=True)
class _Asked:
    device_id: int
    device: str
    site: str


class PowerPoller:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        write_sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        link: AgentLink,
        *,
        tick: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._write_sessions = write_sessions
        self._vault = vault
        self._link = link
        self._tick = tick
        self._next_round: dict[int, float] = {}
        self._out: Counter[str] = Counter()  # reports still expected, per site
        self._settled = asyncio.Event()  # set when no report is expected any more
        self._asked: dict[str, _Asked] = {}
        self._ids = itertools.count(1)
        self._pending: list[Report] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="power-poller")

    async def stop(self) -> None:
        """No new rounds; call before the agent closes."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)

    async def close(self) -> None:
        """Store the reports already in; call after the agent has closed."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_due()
            except Exception:
                log.exception("power poll round failed; trying again next tick")
            await asyncio.sleep(self._tick)

    async def poll_due(self) -> int:
        """Start a round for every site whose interval has passed; returns the orders sent."""
        now = time.monotonic()
        async with self._sessions() as session:
            sites = (await session.execute(select(Site.id, Site.slug, Site.poll_seconds))).all()
            sent = 0
            for site_id, slug, every in sites:
                if not every or self._out[slug] or self._next_round.get(site_id, 0) > now:
                    continue
                self._next_round[site_id] = now + every
                sent += await self._round(session, site_id, slug)
        return sent

    async def poll_once(self) -> int:
        """Poll every site now, whatever its interval, and return once the reports are stored;
        returns the orders sent. For tests (and tools) that want fresh power states without
        waiting for the next round; bound it with `asyncio.timeout`."""
        self._next_round.clear()
        sent = await self.poll_due()
        while any(self._out.values()):
            self._settled.clear()
            await self._settled.wait()
        return sent

    async def _round(self, session: AsyncSession, site_id: int, slug: str) -> int:
        busy = select(Task.device_id).where(Task.exclusive, Task.status.in_(ACTIVE))
        powered = select(ControlPath.device_id).where(ControlPath.kind.in_(POWER_PATHS))
        devices = (
            await session.execute(
                select(Device.id, Device.name).where(
                    Device.site_id == site_id,
                    Device.status != DeviceStatus.DECOMMISSIONED,
                    Device.id.in_(powered),
                    Device.id.not_in(busy.where(Task.device_id.is_not(None))),
                )
            )
        ).all()
        ids = [device_id for device_id, _ in devices]
        paths = await power_paths(session, self._vault, ids, status=True)
        unusable = await unusable_power(session, [i for i in ids if i not in paths])
        sent = 0
        for device_id, name in devices:
            task_id = f"{PREFIX}{next(self._ids)}"
            self._asked[task_id] = _Asked(device_id, name, slug)
            self._out[slug] += 1
            if device_id not in paths:  # stored as unreachable, with what to fix; others go on
                why = unusable.get(device_id, "no usable power path")
                self.report(Report(task_id, TaskStatus.FAILED, message=why))
                continue
            order = PowerOrder(
                task_id,
                name,
                slug,
                PowerAction.STATUS,
                tuple(paths[device_id]),
                POLL_TIMEOUT,
                background=True,
            )
            self._link.submit(order, self.report)
            sent += 1
        return sent

    def report(self, report: Report) -> None:
        if report.status is TaskStatus.RUNNING or report.task_id not in self._asked:
            return
        self._pending.append(report)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="power-poll-reports")

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            asked = [self._asked.pop(r.task_id) for r in batch]
            try:
                await self._write(batch, asked)
            except Exception:
                log.exception("storing %d power polls failed; they are dropped", len(batch))
            for one in asked:
                self._out[one.site] -= 1
            if not any(self._out.values()):
                self._settled.set()

    async def _write(self, batch: list[Report], asked: list[_Asked]) -> None:
        now = utcnow()
        async with unit_of_work(self._write_sessions) as session:
            ids = [one.device_id for one in asked]
            known = {
                row.device_id: row
                for row in await session.scalars(
                    select(PowerStatus).where(PowerStatus.device_id.in_(ids))
                )
            }
            rows = []
            for report, one in zip(batch, asked, strict=True):
                before = known.get(one.device_id)
                answered = report.status is TaskStatus.SUCCEEDED and report.power_state
                state = report.power_state if answered else (before.state if before else None)
                state = state or PowerState.UNKNOWN
                if (
                    answered
                    and before is not None
                    and before.state != state
                    and before.state in _KNOWN
                    and state in _KNOWN  # an outlet's "AC on, machine unknown" is no drift
                ):
                    stage(session, _drift(one, before.state, state))
                rows.append(
                    {
                        "device_id": one.device_id,
                        "state": state,
                        "reachable": bool(answered),
                        "path": report.path,
                        "message": "" if answered else report.message,
                        "checked_at": now,
                        "last_seen_at": now if answered else (before and before.last_seen_at),
                        "changed_at": now,
                    }
                )
            await upsert_power(session, rows)


_KNOWN = (PowerState.ON, PowerState.OFF)


def _drift(asked: _Asked, before: str, after: str) -> Event:
    return Event(
        EventType.POWER_DRIFT,
        SYSTEM,
        target_type="device",
        target_id=asked.device_id,
        target_name=asked.device,
        site=asked.site,
        details={"before": before, "after": after, "seen_by": "poller"},
    )
