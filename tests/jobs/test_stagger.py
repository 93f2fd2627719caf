"""`stagger`: power-ons per second per site, shared by every job (breakers trip otherwise)."""

from __future__ import annotations

import asyncio
import time

from app.jobs.engine import Pacer


async def _starts(pacer: Pacer, sites: list[str], rate: int) -> dict[str, list[float]]:
    seen: dict[str, list[float]] = {site: [] for site in sites}

    async def start(site: str) -> None:
        await pacer.slot(site, rate)
        seen[site].append(time.monotonic())

    await asyncio.gather(*(start(site) for site in sites))
    return seen


def test_starts_are_spaced_per_site_and_sites_do_not_wait_for_each_other() -> None:
    seen = asyncio.run(_starts(Pacer(), ["bj"] * 5 + ["sh"] * 5, rate=20))
    for times in seen.values():
        # The n-th start is n/20 s after the first at the soonest (a late wake-up of one start
        # only shortens the gap to the next, never the spacing from the first).
        assert all(t - times[0] >= n / 20 - 0.005 for n, t in enumerate(times))
    assert abs(seen["bj"][0] - seen["sh"][0]) < 0.04  # the first start of each site is at once
