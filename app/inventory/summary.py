"""The fleet in numbers per site (the dashboard's overview): a few GROUP BY queries over the
sites the caller can see, so the page stays quick at 100,000 devices."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, false, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from agents.protocol import Health, PowerState
from app.context import RequestContext
from app.inventory.models import Device, DeviceKind, HealthStatus, PowerStatus, Site

_STATES = frozenset(state.value for state in PowerState)
_VERDICTS = frozenset(health.value for health in Health)


@dataclass
class SiteCounts:
    """One site's devices by kind, by last known power state and by last health verdict;
    `unreachable` counts the devices whose last power read got no answer (the poller stores
    `reachable = false`)."""

    site: Site
    kinds: Counter[DeviceKind] = field(default_factory=Counter)
    power: Counter[PowerState] = field(default_factory=Counter)
    health: Counter[Health] = field(default_factory=Counter)
    unreachable: int = 0

    @property
    def devices(self) -> int:
        return sum(self.kinds.values())


def _visible(ctx: RequestContext, column: InstrumentedAttribute[int]) -> list[ColumnElement[bool]]:
    """The condition that keeps rows of the caller's sites (none for a global grant)."""
    ids = ctx.principal.visible_site_ids()
    return [] if ids is None else [column.in_(sorted(ids))]


async def site_counts(session: AsyncSession, ctx: RequestContext) -> list[SiteCounts]:
    """Every site the caller can see, in slug order, with its device, power and health counts
    (a device never read counts as `unknown`, as `GET /devices?power_state=unknown` and
    `?health=unknown` list it)."""
    sites = await session.scalars(select(Site).where(*_visible(ctx, Site.id)).order_by(Site.slug))
    found = {site.id: SiteCounts(site) for site in sites}
    if not found:
        return []
    kinds = await session.execute(
        select(Device.site_id, Device.kind, func.count())
        .where(*_visible(ctx, Device.site_id))
        .group_by(Device.site_id, Device.kind)
    )
    for site_id, kind, count in kinds:
        if site_id in found:
            found[site_id].kinds[DeviceKind(kind)] += count
    state = func.coalesce(PowerStatus.state, PowerState.UNKNOWN.value)
    unreachable = func.coalesce(PowerStatus.reachable, True) == false()
    power = await session.execute(
        select(Device.site_id, state, unreachable, func.count())
        .outerjoin(PowerStatus, PowerStatus.device_id == Device.id)
        .where(*_visible(ctx, Device.site_id))
        .group_by(Device.site_id, state, unreachable)
    )
    for site_id, reading, dark, count in power:
        if site_id not in found:
            continue
        counts = found[site_id]
        known = reading in _STATES
        counts.power[PowerState(reading) if known else PowerState.UNKNOWN] += count
        if dark:
            counts.unreachable += count
    verdict = func.coalesce(HealthStatus.health, Health.UNKNOWN.value)
    health = await session.execute(
        select(Device.site_id, verdict, func.count())
        .outerjoin(HealthStatus, HealthStatus.device_id == Device.id)
        .where(*_visible(ctx, Device.site_id))
        .group_by(Device.site_id, verdict)
    )
    for site_id, said, count in health:
        if site_id in found:
            known = said in _VERDICTS
            found[site_id].health[Health(said) if known else Health.UNKNOWN] += count
    return list(found.values())
