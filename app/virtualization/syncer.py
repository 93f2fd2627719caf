"""The periodic guest sync: each hypervisor whose ssh path asks for it (`sync_minutes`), at
that interval, a few hosts at a time. Off unless a host asks: a sync writes the catalogue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.context import system_context
from app.fleetlink.hub import AgentHub
from app.inventory.models import ControlPath, Device, DeviceKind, PathKind
from app.uow import unit_of_work
from app.vault import Vault
from app.virtualization import service

log = logging.getLogger(__name__)


class GuestSyncer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        write_sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        hub: AgentHub,
        *,
        tick: float = 30.0,
        at_once: int = 4,
    ) -> None:
        self._sessions = sessions
        self._write_sessions = write_sessions
        self._vault = vault
        self._hub = hub
        self._tick = tick
        self._slots = asyncio.Semaphore(at_once)
        self._next: dict[int, float] = {}  # hypervisor id → when its next sync is due
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="guest-syncer")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def _run(self) -> None:
        while True:
            try:
                await self.sync_due()
            except Exception:
                log.exception("the guest sync round failed; trying again next tick")
            await asyncio.sleep(self._tick)

    async def sync_due(self) -> int:
        """Sync every host whose interval has passed (a host's first sync after a start is due
        at once); returns the hosts synced."""
        now = time.monotonic()
        due = []
        for device_id, name, minutes in await self._asking():
            if self._next.get(device_id, now) <= now:
                self._next[device_id] = now + minutes * 60
                due.append(name)
        results = await asyncio.gather(*(self._sync(name) for name in due))
        return sum(results)

    async def _asking(self) -> list[tuple[int, str, int]]:
        """Hypervisors whose first ssh path names a hypervisor and a sync interval."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Device.id, Device.name, ControlPath.options)
                .join(ControlPath, ControlPath.device_id == Device.id)
                .where(Device.kind == DeviceKind.HYPERVISOR, ControlPath.kind == PathKind.SSH)
                .order_by(Device.id, ControlPath.priority, ControlPath.id)
            )
            first: dict[int, tuple[str, dict[str, object]]] = {}
            for device_id, name, options in rows:
                first.setdefault(device_id, (name, options))
        return [
            (device_id, name, int(minutes))
            for device_id, (name, options) in first.items()
            if options.get("hypervisor") and isinstance(minutes := options.get("sync_minutes"), int)
        ]

    async def _sync(self, name: str) -> bool:
        ctx = system_context("periodic guest sync (the host's ssh path sets sync_minutes)")
        async with self._slots:
            try:
                async with unit_of_work(self._sessions) as session:
                    host = await service.host_for(session, ctx, self._vault, name)
                listed = await service.ask(self._hub, host)
                async with unit_of_work(self._write_sessions) as session:
                    await service.apply(session, ctx, host, listed, dry_run=False)
            except Exception as exc:  # the next interval tries again
                log.warning("the periodic guest sync of %s failed: %s", name, exc)
                return False
        return True
