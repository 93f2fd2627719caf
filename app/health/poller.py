"""The health poll: each site's devices with a BMC path, their sensors read every
`health_seconds`, and their verdicts stored; a verdict that changes is `health.changed`.

A round at a site never starts while its last one is still out. Its reads (`fleet.read`) go
to the site's agent as background orders, which queue behind what people asked for in the
agent's poll share of the site's slots, at most 64 out at once; the agent's IPMI driver reads
over the same warm sessions the power poll keeps. The first round waits `delay` after the
start, so a restart does not read every BMC along with the first power poll.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.service import SYSTEM
from app.fleetlink.hub import AgentHub
from app.health import fleet
from app.inventory.models import Site
from app.vault import Vault

log = logging.getLogger(__name__)

POLL_TIMEOUT = 60.0  # s for one device's sensors


class HealthPoller:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        write_sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        hub: AgentHub,
        slots: asyncio.Semaphore,
        *,
        tick: float = 5.0,
        delay: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._write_sessions = write_sessions
        self._vault = vault
        self._hub = hub
        self._slots = slots
        self._tick = tick
        self._delay = delay
        self._next_round: dict[int, float] = {}
        self._rounds: dict[int, asyncio.Task[int]] = {}
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="health-poller")

    async def stop(self) -> None:
        """No new rounds, and the rounds out are dropped (their reads are background work)."""
        tasks = [task for task in (self._loop, *self._rounds.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        await asyncio.sleep(self._delay)
        while True:
            try:
                await self.poll_due()
            except Exception:
                log.exception("the health poll failed; trying again next tick")
            await asyncio.sleep(self._tick)

    async def poll_due(self) -> int:
        """Start a round at every site whose interval has passed; returns the rounds started."""
        now = time.monotonic()
        async with self._sessions() as session:
            sites = (await session.execute(select(Site.id, Site.slug, Site.health_seconds))).all()
        started = 0
        for site_id, slug, every in sites:
            out = self._rounds.get(site_id)
            if not every or (out is not None and not out.done()):
                continue
            if isinstance(self._hub.route(slug), str):
                continue  # no agent of ours serves it now: its verdicts wait, not turn unknown
            if self._next_round.get(site_id, 0) > now:
                continue
            self._next_round[site_id] = now + every
            task = asyncio.create_task(self._round(site_id), name=f"health-poll-{slug}")
            task.add_done_callback(_said)
            self._rounds[site_id] = task
            started += 1
        return started

    async def poll_once(self) -> int:
        """Read every site's devices now, whatever the intervals, and return once the verdicts
        are stored; returns the devices read. For tests and tools: bound it with a timeout."""
        self._next_round.clear()
        await self.poll_due()
        read = await asyncio.gather(*self._rounds.values(), return_exceptions=True)
        return sum(count for count in read if isinstance(count, int))

    async def _round(self, site_id: int) -> int:
        async with self._sessions() as session:
            machines = await fleet.site_machines(session, self._vault, site_id)
        await fleet.read(
            self._hub, self._write_sessions, machines, SYSTEM, "poller", self._slots,
            within=POLL_TIMEOUT,
        )  # fmt: skip
        return len(machines)


def _said(task: asyncio.Task[int]) -> None:
    """A round that failed says so in the log (nobody awaits a round but `poll_once`)."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("a health poll round failed", exc_info=error)
