"""The broker's fan-out, without a database: what a viewer joining mid-stream receives."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from app.audit.service import Actor
from app.centrals.presence import Presence
from app.consoles.broker import ConsoleBroker, DeviceSession
from app.consoles.models import ConsoleSession
from app.consoles.viewers import Viewer
from app.context import RequestContext
from app.identity.models import Role
from app.identity.principal import Principal


class _YieldingAudit:
    """Records nothing, but lets the loop run while "recording", as a commit does."""

    async def record(self, *events: Any) -> None:
        for _ in range(3):
            await asyncio.sleep(0)


def _received(viewer: Viewer) -> bytes:
    items = []
    while not viewer.queue.empty():
        item = viewer.queue.get_nowait()
        viewer.sent(item)
        if isinstance(item, bytes):
            items.append(item)
    return b"".join(items)


def test_a_viewer_joining_mid_stream_gets_every_byte_once(tmp_path: Path) -> None:
    async def scenario() -> bytes:
        broker = ConsoleBroker(None, _YieldingAudit(), None, tmp_path, Presence(None), None, None)  # type: ignore[arg-type]
        row = ConsoleSession(id="s1", device_id=1, device_name="web01", site_id=1, site="bj-dc1")
        live = DeviceSession(row, 80, 25, asyncio.get_running_loop().create_future())
        broker._output(live, b"POST ")
        principal = Principal(Actor("user", 1, "alice"), user_id=1, grants=((Role.OPERATOR, None),))
        joining = asyncio.create_task(broker.join(live, RequestContext(principal), "ro"))
        await asyncio.sleep(0)  # the join is now waiting for its audit record
        broker._output(live, b"memory ")
        viewer = await joining
        broker._output(live, b"ok")
        return _received(viewer)

    assert asyncio.run(scenario()) == b"POST memory ok"


def test_a_viewer_too_far_behind_is_dropped_and_loses_the_write_lock(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = ConsoleBroker(None, _YieldingAudit(), None, tmp_path, Presence(None), None, None)  # type: ignore[arg-type]
        row = ConsoleSession(id="s1", device_id=1, device_name="web01", site_id=1, site="bj-dc1")
        live = DeviceSession(row, 80, 25, asyncio.get_running_loop().create_future())
        principal = Principal(Actor("user", 1, "alice"), user_id=1, grants=((Role.OPERATOR, None),))
        slow = await broker.join(live, RequestContext(principal), "rw")
        fast = await broker.join(live, RequestContext(principal), "ro")
        assert live.audience.writer is slow
        for _ in range(9):
            broker._output(live, b"x" * (1024 * 1024))
            _received(fast)  # this one keeps up
        assert slow.id not in live.audience.viewers
        assert live.audience.writer is None
        assert fast.id in live.audience.viewers

    asyncio.run(scenario())
