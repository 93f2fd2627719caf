"""`stagger`: power-ons per second per site, shared by every job (breakers trip otherwise)."""

from __future__ import annotations

import asyncio
import itertools
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
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.045  # 1/20 s, less the clock's grain
    assert abs(seen["bj"][0] - seen["sh"][0]) < 0.04  # the first start of each site is at once
