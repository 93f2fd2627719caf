"""Small asyncio helpers shared by the tests of the SSH simulators."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], bool], within: float = 3.0) -> None:
    """Poll `check` (the servers change state from their own callbacks) until it holds."""
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """`scenario` on a new event loop, failing after 20 s rather than hanging the run."""
    asyncio.run(asyncio.wait_for(scenario(), 20))
