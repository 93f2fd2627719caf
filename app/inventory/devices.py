"""Devices: lookup, filtered listing, and edits that keep the catalogue's rules."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sqlalchemy import Row, Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from agents.protocol import Health, PowerState
from app.audit.models import EventType
from app.audit.service import Event, diff, stage
from app.context import RequestContext
from app.errors import AlreadyExists, AmbiguousReference, FieldError, InUse, NotFound
from app.identity.models import Role
from app.inventory import paths as path_service
from app.inventory.models import (
    ControlPath,
    Device,
    DeviceKind,
    DeviceStatus,
    DeviceTag,
    HealthStatus,
    PowerStatus,
    Rack,
    Site,
)
from app.inventory.placement import ParentRef, RackOccupancy, check_parent, check_rack
from app.inventory.racks import get_rack
from app.inventory.refs import as_id, unavailable
from app.inventory.schemas import (
    DeviceCreate,
    DeviceDetail,
    DeviceRead,
    DeviceUpdate,
    Page,
    PowerRead,
)
from app.inventory.selectors import name_in, resolve
from app.inventory.sites import get_site
from app.paging import decode_cursor, encode_cursor

Sort = Literal["name", "-name"]
# device, site slug, rack, parent, last power read
ReadQuery = Select[Device, str, str | None, str | None, PowerStatus | None, str | None]
ReadRow = Row[Device, str, str | None, str | None, PowerStatus | None, str | None]
Parent = aliased(Device)


@dataclass
class DeviceFilter:
    """Filters of GET /devices, the CLI and bulk actions; all given filters must match."""

    select: str | None = None
    site: str | None = None
    rack: str | None = None
    kind: DeviceKind | None = None
    tags: list[str] = field(default_factory=list)
    status: DeviceStatus | None = None
    parent: str | None = None
    power_state: PowerState | None = None  # never polled counts as unknown
    reachable: bool | None = None  # False: the last power read got no answer (never read: neither)
    health: Health | None = None  # never read counts as unknown
    q: str | None = None
    site_ids: set[int] | None = None  # the caller's visible sites; None: all
    names: list[str] | None = None  # `select` expanded once (`prepare`), reused page by page


def _read_query() -> ReadQuery:
    return (
        select(Device, Site.slug, Rack.name, Parent.name, PowerStatus, HealthStatus.health)
        .join(Site, Device.site_id == Site.id)
        .outerjoin(Rack, Device.rack_id == Rack.id)
        .outerjoin(Parent, Device.parent_id == Parent.id)
        .outerjoin(PowerStatus, PowerStatus.device_id == Device.id)
        .outerjoin(HealthStatus, HealthStatus.device_id == Device.id)
    )


async def _with_tags(session: AsyncSession, rows: Sequence[ReadRow]) -> list[DeviceRead]:
    ids = [device.id for device, *_ in rows]
    tags: dict[int, list[str]] = {device_id: [] for device_id in ids}
    if ids:
        found = await session.execute(
            select(DeviceTag.device_id, DeviceTag.tag)
            .where(DeviceTag.device_id.in_(ids))
            .order_by(DeviceTag.tag)
        )
        for device_id, tag in found:
            tags[device_id].append(tag)
    return [
        DeviceRead(
            id=device.id,
            name=device.name,
            kind=device.kind,
            site=site,
            rack=rack,
            position_u=device.position_u,
            height_u=device.height_u,
            parent=parent,
            status=device.status,
            vendor=device.vendor,
            model=device.model,
            serial=device.serial,
            asset_tag=device.asset_tag,
            arch=device.arch,
            os=device.os,
            os_version=device.os_version,
            description=device.description,
            tags=tags[device.id],
            attributes=device.attributes,
            power_state=stored_state(power),
            power=to_power_read(power) if power else None,
            health=Health(health or Health.UNKNOWN),
            created_at=device.created_at,
            updated_at=device.updated_at,
        )
        for device, site, rack, parent, power, health in rows
    ]


async def filtered_query(session: AsyncSession, flt: DeviceFilter) -> ReadQuery:
    """The read query narrowed by a filter; unknown site/rack/parent names are a 404, and so
    are those of sites the filter cannot see (the same 404, word for word)."""
    query = _read_query()
    if flt.select is not None:
        dialect = session.get_bind().dialect.name
        names = flt.names if flt.names is not None else await resolve(flt.select)
        query = query.where(name_in(Device.name, names, dialect))
    if flt.site_ids is not None:
        query = query.where(Device.site_id.in_(sorted(flt.site_ids)))
    if flt.site is not None:
        site = await get_site(session, flt.site, flt.site_ids)
        query = query.where(Device.site_id == site.id)
    if flt.rack is not None:
        rack, _ = await get_rack(session, flt.rack, flt.site, flt.site_ids)
        query = query.where(Device.rack_id == rack.id)
    if flt.parent is not None:
        parent = await get_device(session, flt.parent, flt.site_ids)
        query = query.where(Device.parent_id == parent.id)
    if flt.kind is not None:
        query = query.where(Device.kind == flt.kind)
    if flt.status is not None:
        query = query.where(Device.status == flt.status)
    if flt.power_state is PowerState.UNKNOWN:
        query = query.where(
            or_(PowerStatus.state.is_(None), PowerStatus.state == PowerState.UNKNOWN.value)
        )
    elif flt.power_state is not None:
        query = query.where(PowerStatus.state == flt.power_state.value)
    if flt.reachable is not None:
        query = query.where(PowerStatus.reachable.is_(flt.reachable))
    if flt.health is Health.UNKNOWN:
        query = query.where(
            or_(HealthStatus.health.is_(None), HealthStatus.health == Health.UNKNOWN.value)
        )
    elif flt.health is not None:
        query = query.where(HealthStatus.health == flt.health.value)
    for tag in flt.tags:
        # EXISTS, probed per device on the (device_id, tag) key: an IN over every device with a
        # common tag made SQLite multiply it with the name list (seconds at 100,000 devices).
        tagged = select(DeviceTag.device_id).where(
            DeviceTag.device_id == Device.id, DeviceTag.tag == tag
        )
        query = query.where(tagged.exists())
    if flt.q:
        query = query.where(
            or_(
                *(
                    column.icontains(flt.q, autoescape=True)
                    for column in (
                        Device.name,
                        Device.serial,
                        Device.asset_tag,
                        Device.vendor,
                        Device.model,
                        Device.description,
                    )
                )
            )
        )
    return query


async def prepare(session: AsyncSession, flt: DeviceFilter) -> DeviceFilter:
    """The filter with its selector expanded once and its names checked: a stream's 4xx comes
    before its first byte, and its pages do not expand the selector again."""
    if flt.select is not None and flt.names is None:
        flt = replace(flt, names=await resolve(flt.select))
    await filtered_query(session, flt)
    return flt


async def list_devices(
    session: AsyncSession,
    flt: DeviceFilter,
    *,
    limit: int = 100,
    cursor: str | None = None,
    sort: Sort = "name",
) -> Page[DeviceRead]:
    """One page in name order; the cursor is the last name seen, so paging is stable."""
    query = await filtered_query(session, flt)
    descending = sort == "-name"
    if cursor is not None:
        (after,) = decode_cursor(cursor, str)
        query = query.where(Device.name < after if descending else Device.name > after)
    query = query.order_by(Device.name.desc() if descending else Device.name).limit(limit + 1)
    rows = list(await session.execute(query))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor([rows[-1][0].name]) if more else None
    return Page[DeviceRead](items=await _with_tags(session, rows), next_cursor=next_cursor)


async def count_devices(session: AsyncSession, flt: DeviceFilter, *, upto: int) -> int:
    """How many devices match, counted no further than `upto` (a list shows "1,000+"): a
    filter over 100,000 devices must not count them all on every keystroke."""
    query = (await filtered_query(session, flt)).with_only_columns(Device.id).limit(upto)
    return await session.scalar(select(func.count()).select_from(query.subquery())) or 0


def to_power_read(row: PowerStatus) -> PowerRead:
    return PowerRead(
        state=stored_state(row),
        reachable=row.reachable,
        checked_at=row.checked_at,
        path=row.path,
        message=row.message,
        last_seen_at=row.last_seen_at,
    )


_STATES = frozenset(PowerState)


def stored_state(row: PowerStatus | None) -> PowerState:
    """The stored state as a member: never read, or a spelling it does not know, is unknown."""
    if row is None or row.state not in _STATES:
        return PowerState.UNKNOWN
    return PowerState(row.state)


def no_device(ref: str) -> str:
    """The answer to a device that does not exist, and to one the caller cannot see."""
    return f"no device {ref!r}; search with GET /api/v1/devices?q="


async def get_device(session: AsyncSession, ref: str, visible: set[int] | None = None) -> Device:
    """By name, or by numeric id (names are never all digits), among the `visible` sites
    (None: every site)."""
    device_id = as_id(ref)
    device = await session.scalar(
        select(Device).where(Device.id == device_id if device_id else Device.name == ref)
    )
    if device is None or (visible is not None and device.site_id not in visible):
        raise NotFound(no_device(ref))
    return device


async def device_for(
    session: AsyncSession, ctx: RequestContext, ref: str, role: Role, what: str
) -> Device:
    """A device at a site where the caller holds `role` (elsewhere it looks missing)."""
    device, _ = await device_and_site(session, ctx, ref, role, what)
    return device


async def device_and_site(
    session: AsyncSession, ctx: RequestContext, ref: str, role: Role, what: str
) -> tuple[Device, Site]:
    """`device_for`, with the device's site read in the same query (a page shows both)."""
    device_id = as_id(ref)
    row = (
        await session.execute(
            select(Device, Site)
            .join(Site, Device.site_id == Site.id)
            .where(Device.id == device_id if device_id else Device.name == ref)
        )
    ).first()
    if row is None:
        raise NotFound(no_device(ref))
    device, site = row
    ctx.require(
        role,
        device.site_id,
        what=what,
        target_type="device",
        target_id=device.id,
        target_name=device.name,
        site=site.slug,
        missing=no_device(ref),
    )
    return device, site


def _event(
    ctx: RequestContext, type_: EventType, read: DeviceRead, details: dict[str, Any]
) -> Event:
    return ctx.event(
        type_,
        target_type="device",
        target_id=read.id,
        target_name=read.name,
        site=read.site,
        details=details,
    )


async def read_device(session: AsyncSession, device: Device) -> DeviceDetail:
    rows = list(await session.execute(_read_query().where(Device.id == device.id)))
    (read,) = await _with_tags(session, rows)
    paths = await path_service.list_paths(session, device)
    return DeviceDetail(**read.model_dump(), paths=paths)


def as_fields(read: DeviceRead) -> dict[str, Any]:
    """The writable fields of a device, in the shape of DeviceCreate."""
    return read.model_dump(mode="json", include=set(DeviceCreate.model_fields))


@contextmanager
def _field(name: str) -> Iterator[None]:
    """A name in a request body that does not resolve is bad input (422), not a missing URL."""
    try:
        yield
    except (NotFound, AmbiguousReference) as exc:
        raise FieldError(name, str(exc).split(";")[0]) from exc


async def _resolve(
    session: AsyncSession, data: DeviceCreate, device_id: int | None, visible: set[int] | None
) -> tuple[Site, Rack | None, Device | None]:
    """The site, rack and parent the body names, among the `visible` sites only."""
    with _field("site"):
        site = await get_site(session, data.site, visible)
    with _field("rack"):
        rack = (await get_rack(session, data.rack, site.slug))[0] if data.rack else None
    with _field("parent"):
        parent = await get_device(session, data.parent, visible) if data.parent else None
    if parent is not None and parent.id == device_id:
        raise FieldError("parent", "a device cannot be its own parent")
    check_rack(data.kind, site, rack, data.position_u, data.height_u)
    check_parent(
        data.kind,
        site,
        ParentRef(parent.id, parent.name, parent.kind, parent.site_id) if parent else None,
    )
    if rack is not None and data.position_u is not None:
        occupancy = RackOccupancy()
        neighbours = await session.execute(
            select(Device.name, Device.position_u, Device.height_u).where(
                Device.rack_id == rack.id, Device.position_u.is_not(None)
            )
        )
        for name, position_u, height_u in neighbours:
            if position_u is not None:
                occupancy.add(rack.id, name, position_u, height_u)
        occupancy.place(rack, data.name, data.position_u, data.height_u)
    return site, rack, parent


async def _check_unique(
    session: AsyncSession, data: DeviceCreate, device_id: int | None, visible: set[int] | None
) -> None:
    """Names and asset tags are unique across all sites; one held at a site the caller cannot
    see is refused without naming its holder."""
    other = (
        await session.execute(select(Device.id, Device.site_id).where(Device.name == data.name))
    ).first()
    if other is not None and other.id != device_id:
        if visible is not None and other.site_id not in visible:
            raise AlreadyExists(unavailable("device name", data.name))
        raise AlreadyExists(f"a device named {data.name!r} already exists (id {other.id})")
    if data.asset_tag is not None:
        holder = await session.scalar(select(Device).where(Device.asset_tag == data.asset_tag))
        if holder is not None and holder.id != device_id:
            if visible is not None and holder.site_id not in visible:
                raise AlreadyExists(unavailable("asset tag", data.asset_tag))
            raise AlreadyExists(f"asset tag {data.asset_tag!r} is already on {holder.name!r}")


def columns(
    data: DeviceCreate, site_id: int, rack_id: int | None, parent_id: int | None
) -> dict[str, Any]:
    """The device's table columns from checked input; one place for edits and imports."""
    plain = data.model_dump(exclude={"site", "rack", "parent", "tags"})
    return plain | {"site_id": site_id, "rack_id": rack_id, "parent_id": parent_id}


def _apply(
    device: Device, data: DeviceCreate, site: Site, rack: Rack | None, parent: Device | None
) -> None:
    values = columns(data, site.id, rack.id if rack else None, parent.id if parent else None)
    for name, value in values.items():
        setattr(device, name, value)


async def _set_tags(session: AsyncSession, device_id: int, tags: list[str]) -> None:
    await session.execute(delete(DeviceTag).where(DeviceTag.device_id == device_id))
    session.add_all(DeviceTag(device_id=device_id, tag=tag) for tag in tags)


async def create_device(
    session: AsyncSession, ctx: RequestContext, data: DeviceCreate
) -> DeviceDetail:
    visible = ctx.principal.visible_site_ids()
    with _field("site"):
        target = await get_site(session, data.site, visible)
    ctx.require(
        Role.ADMIN,
        target.id,
        what="adding devices",
        target_type="device",
        target_name=data.name,
        site=target.slug,
    )
    await _check_unique(session, data, None, visible)
    site, rack, parent = await _resolve(session, data, None, visible)
    device = Device()
    _apply(device, data, site, rack, parent)
    session.add(device)
    await session.flush()
    await _set_tags(session, device.id, data.tags)
    await session.flush()
    read = await read_device(session, device)
    stage(session, _event(ctx, EventType.DEVICE_CREATED, read, {"after": as_fields(read)}))
    return read


async def update_device(
    session: AsyncSession, ctx: RequestContext, device: Device, data: DeviceUpdate
) -> DeviceDetail:
    """Merge the given fields over the current ones and check the result as a whole."""
    current = await read_device(session, device)
    merged = DeviceCreate.model_validate(as_fields(current) | data.model_dump(exclude_unset=True))
    visible = ctx.principal.visible_site_ids()
    await _check_unique(session, merged, device.id, visible)
    site, rack, parent = await _resolve(session, merged, device.id, visible)
    if site.id != device.site_id:
        ctx.require(
            Role.ADMIN,
            site.id,
            what="moving devices to a site",
            target_type="device",
            target_id=device.id,
            target_name=device.name,
            site=site.slug,
        )
    if merged.kind is not DeviceKind.HYPERVISOR or site.id != device.site_id:
        await _check_no_vms(session, device, "it must stay a hypervisor at its site")
    _apply(device, merged, site, rack, parent)
    await session.flush()
    await path_service.check_links(session, device, kind_changed=merged.kind is not current.kind)
    if merged.tags != current.tags:
        await _set_tags(session, device.id, merged.tags)
        await session.flush()
    read = await read_device(session, device)
    changes = diff(as_fields(current), as_fields(read))
    stage(session, _event(ctx, EventType.DEVICE_UPDATED, read, changes))
    return read


async def delete_device(session: AsyncSession, ctx: RequestContext, device: Device) -> None:
    site = await session.get(Site, device.site_id)
    if site is not None:
        ctx.require_ticket(site.slug, site.require_ticket, "deleting a device")
    users = list(
        await session.scalars(
            select(Device.name)
            .join(ControlPath, ControlPath.device_id == Device.id)
            .where(ControlPath.via_device_id == device.id)
            .distinct()
            .limit(5)
        )
    )
    if users:
        raise InUse(
            f"{device.name!r} is the control path of {', '.join(users)}; remove those paths first"
        )
    await _check_no_vms(session, device, "move or delete them first")
    before = await read_device(session, device)
    await session.delete(device)
    await session.flush()
    details = {
        "before": as_fields(before),
        "paths": [p.model_dump(mode="json") for p in before.paths],
    }
    stage(session, _event(ctx, EventType.DEVICE_DELETED, before, details))


async def _check_no_vms(session: AsyncSession, device: Device, remedy: str) -> None:
    children = await session.scalar(select(func.count()).where(Device.parent_id == device.id))
    if children:
        raise InUse(f"{device.name!r} hosts {children} vms; {remedy}")
