"""Import and export of devices: CSV and JSON, idempotent upsert by name, all or nothing."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import csv_cells
from app.audit.models import EventType
from app.audit.service import stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import FieldError, ImportRejected, InvalidInput
from app.identity.models import Role
from app.inventory import devices as device_service
from app.inventory import paths as path_service
from app.inventory.models import ControlPath, Device, DeviceKind, DeviceTag, PathKind, Rack, Site
from app.inventory.placement import ParentRef, RackOccupancy, check_parent, check_rack
from app.inventory.refs import unavailable
from app.inventory.schemas import (
    PATH_MODELS,
    DeviceCreate,
    DeviceRead,
    ImportChange,
    ImportResult,
    Name,
    PathCreate,
)
from app.inventory.selectors import name_in
from app.limits import TOO_DEEP, nests_too_deep
from app.vault import Vault

CSV_COLUMNS = [
    "name",
    "kind",
    "site",
    "rack",
    "position_u",
    "height_u",
    "parent",
    "status",
    "vendor",
    "model",
    "serial",
    "asset_tag",
    "arch",
    "os",
    "os_version",
    "description",
    "tags",
    "attributes",
]
_NULLABLE = {"rack", "position_u", "parent", "asset_tag"}
_INTEGERS = {"position_u", "height_u"}
_KEEP_IF_EMPTY = {"kind", "site", "height_u", "status"}  # an empty cell keeps (or defaults) these
MAX_ROWS = 200_000
_CHUNK = 1000
_REFRESH_STATISTICS_AFTER = 1000
_IMPORTED = {"create": EventType.DEVICE_CREATED, "update": EventType.DEVICE_UPDATED}
_T = TypeVar("_T")
_paths_adapter: TypeAdapter[list[Any]] = TypeAdapter(list[PathCreate])
_name_adapter: TypeAdapter[str] = TypeAdapter(Name)


# Parsing -------------------------------------------------------------------------------------

Row = tuple[int, dict[str, Any]]


def parse_csv(text: str) -> list[Row]:
    """Rows keyed by line number; an empty cell clears a field, a missing column keeps it."""
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise InvalidInput(f"line 1: not valid CSV ({exc})") from exc
    unknown = [column for column in header if column not in CSV_COLUMNS]
    if unknown or "name" not in header:
        raise InvalidInput(
            f"line 1: the header must name columns among {', '.join(CSV_COLUMNS)} and include "
            f"'name'" + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
        )
    rows: list[Row] = []
    try:
        for record in reader:
            if None in record:
                raise InvalidInput(f"line {reader.line_num}: more cells than header columns")
            rows.append((reader.line_num, _from_cells(reader.line_num, record)))
            _check_count(rows)
    except csv.Error as exc:
        raise InvalidInput(f"line {reader.line_num}: not valid CSV ({exc})") from exc
    return rows


def _from_cells(line: int, record: dict[str, str | None]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column, cell in record.items():
        value = csv_cells.restore((cell or "").strip())
        if column in _KEEP_IF_EMPTY and not value:
            continue
        if column in _NULLABLE and not value:
            row[column] = None
        elif column in _INTEGERS and value:
            row[column] = int(value) if value.isascii() and value.isdigit() else value
        elif column == "tags":
            row[column] = [tag.strip() for tag in value.replace(";", ",").split(",") if tag.strip()]
        elif column == "attributes":
            if nests_too_deep(value.encode()):
                raise ImportRejected([{"row": line, "field": "attributes", "message": TOO_DEEP}])
            try:
                row[column] = json.loads(value) if value else {}
            except ValueError as exc:
                raise ImportRejected(
                    [{"row": line, "field": "attributes", "message": f"not JSON ({exc})"}]
                ) from exc
        else:
            row[str(column)] = value
    return row


def parse_json(raw: bytes) -> list[Row]:
    """A list of devices, or {"devices": [...]}; rows are numbered from 1."""
    if nests_too_deep(raw):
        raise InvalidInput(f"the JSON body {TOO_DEEP}")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and set(data) == {"devices"}:
        data = data["devices"]
    if not isinstance(data, list):
        raise InvalidInput('give a JSON list of devices, or {"devices": [...]}')
    rows: list[Row] = []
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise ImportRejected([{"row": number, "field": "", "message": "not a JSON object"}])
        rows.append((number, item))
        _check_count(rows)
    return rows


def _check_count(rows: list[Row]) -> None:
    if len(rows) > MAX_ROWS:
        raise InvalidInput(f"an import takes at most {MAX_ROWS} rows; split the file")


# Import --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    row: int
    data: DeviceCreate
    existing: DeviceRead | None
    paths: list[Any] | None
    change: ImportChange
    path_secrets: list[str | None] = field(default_factory=list)
    site: Site | None = None
    rack: Rack | None = None
    parent_name: str | None = None


@dataclass
class _Errors:
    items: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, row: int, field_name: str, message: str) -> None:
        self.items.append((row, field_name, message))

    def rejected(self) -> ImportRejected:
        """Every error in row order, though the checks run pass after pass over all rows."""
        ordered = sorted(self.items, key=lambda item: item[0])
        return ImportRejected([{"row": r, "field": f, "message": m} for r, f, m in ordered])

    def from_validation(self, row: int, exc: ValidationError, prefix: str = "") -> None:
        for error in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(part) for part in error["loc"])
            self.add(row, prefix + loc, error["msg"])


async def import_devices(
    session: AsyncSession, ctx: RequestContext, vault: Vault, rows: list[Row], *, dry_run: bool
) -> ImportResult:
    """Check every row, then write them all in the caller's transaction; any error → nothing."""
    errors = _Errors()
    names = _names(rows, errors)
    visible = ctx.principal.visible_site_ids()
    sites_query, racks_query = select(Site), select(Rack)
    if visible is not None:  # another site's slug or rack reads as unknown
        sites_query = sites_query.where(Site.id.in_(sorted(visible)))
        racks_query = racks_query.where(Rack.site_id.in_(sorted(visible)))
    sites = {site.slug: site for site in await session.scalars(sites_query)}
    racks = {(rack.site_id, rack.name): rack for rack in await session.scalars(racks_query)}
    existing = await _load_existing(session, list(names))
    _taken_elsewhere(rows, existing, sites, errors)
    plans = _validate(rows, existing, errors)
    outside = await _load_devices_by_name(
        session,
        {p.data.parent for p in plans if p.data.parent and p.data.parent not in names},
        visible,
    )
    await _check_placement(session, plans, sites, racks, outside, errors)
    _authorize(ctx, plans, sites)
    await _check_asset_tags(session, plans, errors, visible)
    if errors.items:
        raise errors.rejected()
    for plan in plans:
        _diff(plan)
    if any(plan.paths is not None for plan in plans):
        await _diff_paths(session, vault, plans)
    if not dry_run:
        ids = await _write(session, vault, plans, visible)
        _audit(ctx, session, plans, ids)
    counts = dict.fromkeys(("create", "update", "unchanged"), 0)
    for plan in plans:
        counts[plan.change.action] += 1
    return ImportResult(
        dry_run=dry_run,
        created=counts["create"],
        updated=counts["update"],
        unchanged=counts["unchanged"],
        rows=[plan.change for plan in plans],
    )


def _taken_elsewhere(
    rows: list[Row], existing: dict[str, DeviceRead], sites: dict[str, Site], errors: _Errors
) -> None:
    """A row naming a device of a site the caller cannot see is refused, naming nothing of it
    (device names are unique across all sites)."""
    for number, row in rows:
        name = row.get("name")
        current = existing.get(name) if isinstance(name, str) else None
        if current is not None and current.site not in sites:
            errors.add(number, "name", unavailable("device name", current.name))
            row["name"] = None
    for name in [name for name, read in existing.items() if read.site not in sites]:
        del existing[name]


def _authorize(ctx: RequestContext, plans: list[_Plan], sites: dict[str, Site]) -> None:
    """Importing is an admin's act at every site the file puts devices in or takes them from."""
    touched = {plan.data.site for plan in plans} | {p.existing.site for p in plans if p.existing}
    for slug in sorted(touched):
        site = sites.get(slug)
        if site is not None:
            ctx.require(
                Role.ADMIN,
                site.id,
                what="importing devices",
                target_type="site",
                target_id=site.id,
                target_name=slug,
                site=slug,
            )


def _audit(
    ctx: RequestContext, session: AsyncSession, plans: list[_Plan], ids: dict[str, int]
) -> None:
    """One event per device created or changed, and one for the import as a whole."""
    counts = {"create": 0, "update": 0, "unchanged": 0}
    for plan in plans:
        counts[plan.change.action] += 1
        if plan.change.action == "unchanged":
            continue
        details: dict[str, Any] = dict(plan.change.changes)
        if plan.change.action == "create":
            details = {"after": plan.data.model_dump(mode="json")}
        stage(
            session,
            ctx.event(
                _IMPORTED[plan.change.action],
                target_type="device",
                target_id=ids.get(plan.data.name),
                target_name=plan.data.name,
                site=plan.data.site,
                details={"import_row": plan.row, **details},
            ),
        )
    stage(session, ctx.event(EventType.DEVICES_IMPORTED, details={"rows": len(plans), **counts}))


def _names(rows: list[Row], errors: _Errors) -> dict[str, int]:
    seen: dict[str, int] = {}
    for number, row in rows:
        try:
            name = _name_adapter.validate_python(row.get("name"))
        except ValidationError as exc:
            errors.from_validation(number, exc, prefix="name")
            row["name"] = None
            continue
        if name in seen:
            errors.add(number, "name", f"{name!r} is also on row {seen[name]}")
        else:
            seen[name] = number
    return seen


async def _load_existing(session: AsyncSession, names: list[str]) -> dict[str, DeviceRead]:
    found: dict[str, DeviceRead] = {}
    dialect = session.get_bind().dialect.name
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        query = await device_service.filtered_query(session, device_service.DeviceFilter())
        rows = list(await session.execute(query.where(name_in(Device.name, chunk, dialect))))
        for read in await device_service._with_tags(session, rows):
            found[read.name] = read
    return found


async def _load_devices_by_name(
    session: AsyncSession, names: Iterable[str], visible: set[int] | None
) -> dict[str, Device]:
    """The named devices among the `visible` sites (None: every site)."""
    wanted = list(names)
    if not wanted:
        return {}
    dialect = session.get_bind().dialect.name
    query = select(Device).where(name_in(Device.name, wanted, dialect))
    if visible is not None:
        query = query.where(Device.site_id.in_(sorted(visible)))
    return {device.name: device for device in await session.scalars(query)}


def _validate(rows: list[Row], existing: dict[str, DeviceRead], errors: _Errors) -> list[_Plan]:
    plans: list[_Plan] = []
    for number, row in rows:
        name = row.get("name")
        if not isinstance(name, str):
            continue
        current = existing.get(name)
        fields = {key: value for key, value in row.items() if key != "paths"}
        merged = (device_service.as_fields(current) if current else {}) | fields
        try:
            data = DeviceCreate.model_validate(merged)
        except ValidationError as exc:
            errors.from_validation(number, exc)
            continue
        paths = None
        if "paths" in row:
            try:
                paths = _paths_adapter.validate_python(row["paths"])
            except ValidationError as exc:
                errors.from_validation(number, exc, prefix="paths.")
                continue
        action = "update" if current else "create"
        plans.append(
            _Plan(number, data, current, paths, ImportChange(row=number, name=name, action=action))
        )
    return plans


async def _check_placement(
    session: AsyncSession,
    plans: list[_Plan],
    sites: dict[str, Site],
    racks: dict[tuple[int, str], Rack],
    outside: dict[str, Device],
    errors: _Errors,
) -> None:
    in_file = {plan.data.name: plan for plan in plans}
    occupancy = await _occupancy(session, plans, sites, racks)
    for plan in plans:
        data = plan.data
        site = sites.get(data.site)
        if site is None:
            errors.add(plan.row, "site", f"no site {data.site!r}")
            continue
        rack = racks.get((site.id, data.rack)) if data.rack else None
        if data.rack and rack is None:
            errors.add(plan.row, "rack", f"site {site.slug!r} has no rack {data.rack!r}")
            continue
        plan.site, plan.rack = site, rack
        try:
            check_rack(data.kind, site, rack, data.position_u, data.height_u)
            check_parent(data.kind, site, _parent_ref(data.parent, in_file, sites, outside))
            if rack is not None and data.position_u is not None:
                occupancy.place(rack, data.name, data.position_u, data.height_u)
        except FieldError as exc:
            errors.add(plan.row, exc.field, exc.message)


def _parent_ref(
    name: str | None,
    in_file: dict[str, _Plan],
    sites: dict[str, Site],
    outside: dict[str, Device],
) -> ParentRef | None:
    if name is None:
        return None
    if name in in_file:
        parent = in_file[name].data
        site = sites.get(parent.site)
        return ParentRef(None, name, parent.kind, site.id if site else -1)
    device = outside.get(name)
    if device is None:
        raise FieldError("parent", f"no device {name!r} in the catalogue or in this file")
    return ParentRef(device.id, device.name, device.kind, device.site_id)


async def _occupancy(
    session: AsyncSession,
    plans: list[_Plan],
    sites: dict[str, Site],
    racks: dict[tuple[int, str], Rack],
) -> RackOccupancy:
    """Units taken in the racks this file touches, minus the devices the file moves."""
    rack_ids = {
        rack.id
        for plan in plans
        if plan.data.rack
        and (site := sites.get(plan.data.site))
        and (rack := racks.get((site.id, plan.data.rack)))
    }
    occupancy = RackOccupancy()
    moving = {plan.data.name for plan in plans}
    for start in range(0, len(rack_ids), _CHUNK):
        chunk = list(rack_ids)[start : start + _CHUNK]
        taken = await session.execute(
            select(Device.rack_id, Device.name, Device.position_u, Device.height_u).where(
                Device.rack_id.in_(chunk), Device.position_u.is_not(None)
            )
        )
        for rack_id, name, position_u, height_u in taken:
            if name not in moving and rack_id is not None and position_u is not None:
                occupancy.add(rack_id, name, position_u, height_u)
    return occupancy


async def _check_asset_tags(
    session: AsyncSession, plans: list[_Plan], errors: _Errors, visible: set[int] | None
) -> None:
    wanted: dict[str, _Plan] = {}
    for plan in plans:
        tag = plan.data.asset_tag
        if tag is None:
            continue
        if tag in wanted:
            errors.add(plan.row, "asset_tag", f"{tag!r} is also on row {wanted[tag].row}")
        wanted[tag] = plan
    if not wanted:
        return
    names = {plan.data.name for plan in plans}
    tags = list(wanted)
    for start in range(0, len(tags), _CHUNK):
        holders = await session.execute(
            select(Device.name, Device.asset_tag, Device.site_id).where(
                Device.asset_tag.in_(tags[start : start + _CHUNK])
            )
        )
        for holder, tag, site_id in holders:
            plan = wanted[str(tag)]
            if visible is not None and site_id not in visible:
                errors.add(plan.row, "asset_tag", unavailable("asset tag", str(tag)))
            elif holder != plan.data.name and holder not in names:
                errors.add(plan.row, "asset_tag", f"{tag!r} is already on {holder!r}")


def _diff(plan: _Plan) -> None:
    if plan.existing is None:
        return
    before = device_service.as_fields(plan.existing)
    after = plan.data.model_dump(mode="json")
    plan.change.changes = {
        key: {"before": before[key], "after": after[key]}
        for key in after
        if before.get(key) != after[key]
    }
    plan.change.action = "update" if plan.change.changes else "unchanged"


def _path_dict(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", exclude={"secret"})
    secret = getattr(model, "secret", None)
    data["secret"] = secret.get_secret_value() if secret is not None else None
    return data


async def _diff_paths(session: AsyncSession, vault: Vault, plans: list[_Plan]) -> None:
    ids = [plan.existing.id for plan in plans if plan.existing and plan.paths is not None]
    stored: dict[int, list[dict[str, Any]]] = {device_id: [] for device_id in ids}
    for start in range(0, len(ids), _CHUNK):
        rows = await session.execute(
            select(ControlPath, Device.name)
            .outerjoin(Device, ControlPath.via_device_id == Device.id)
            .where(ControlPath.device_id.in_(ids[start : start + _CHUNK]))
            .order_by(ControlPath.priority, ControlPath.id)
        )
        for path, via in rows:
            stored[path.device_id].append(
                {
                    "kind": path.kind.value if isinstance(path.kind, PathKind) else path.kind,
                    "priority": path.priority,
                    "address": path.address,
                    "port": path.port,
                    "username": path.username,
                    "via": via,
                    "outlets": path.outlets,
                    "domain": path.domain,
                    "options": path.options,
                    "secret": vault.decrypt(path.secret_ciphertext)
                    if path.secret_ciphertext
                    else None,
                }
            )
    for plan in plans:
        if plan.paths is None:
            continue
        old = stored.get(plan.existing.id, []) if plan.existing else []
        new = [_path_dict(model) for model in plan.paths]
        for wanted in new:
            if wanted["secret"] is None:
                wanted["secret"] = _kept_secret(old, wanted)
        if _comparable(old) != _comparable(new):
            plan.change.changes["paths"] = {
                "before": [_public(path) for path in old],
                "after": [_public(path) for path in new],
            }
            plan.change.action = "update" if plan.existing else "create"
        plan.path_secrets = [wanted["secret"] for wanted in new]


def _kept_secret(old: list[dict[str, Any]], wanted: dict[str, Any]) -> str | None:
    """The secret of a stored path of the same kind that `wanted` does not re-point, if any."""
    kind = PathKind(wanted["kind"])
    for path in old:
        if (
            path["secret"]
            and path["kind"] == kind
            and not path_service.repointed(kind, path, wanted)
        ):
            return str(path["secret"])
    return None


def _comparable(paths: list[dict[str, Any]]) -> list[str]:
    keys = (
        "kind",
        "priority",
        "address",
        "port",
        "username",
        "via",
        "outlets",
        "domain",
        "options",
        "secret",
    )
    return sorted(
        json.dumps({key: path.get(key) for key in keys}, sort_keys=True) for path in paths
    )


def _public(path: dict[str, Any]) -> dict[str, Any]:
    shown = {key: value for key, value in path.items() if value is not None and key != "secret"}
    if path.get("secret"):
        shown["secret"] = "set"
    return shown


# Writing -------------------------------------------------------------------------------------


def _columns(plan: _Plan, ids: dict[str, int]) -> dict[str, Any]:
    data = plan.data
    assert plan.site is not None
    rack_id = plan.rack.id if plan.rack else None
    parent_id = ids[data.parent] if data.parent else None
    values = device_service.columns(data, plan.site.id, rack_id, parent_id)
    return values | {"updated_at": utcnow()}


def _chunks(items: list[_T]) -> Iterable[list[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


async def _write(
    session: AsyncSession, vault: Vault, plans: list[_Plan], visible: set[int] | None
) -> dict[str, int]:
    ids = {plan.existing.name: plan.existing.id for plan in plans if plan.existing}
    ids |= {
        device.name: device.id
        for device in (
            await _load_devices_by_name(
                session,
                {p.data.parent for p in plans if p.data.parent and p.data.parent not in ids},
                visible,
            )
        ).values()
    }
    # Hypervisors before their vms, so a parent created by this file has an id in time.
    creates = [p for p in plans if p.existing is None]
    for vms in (False, True):
        for chunk in _chunks([p for p in creates if (p.data.kind is DeviceKind.VM) == vms]):
            inserted = await session.execute(
                insert(Device).returning(Device.id, Device.name),
                [_columns(plan, ids) | {"created_at": utcnow()} for plan in chunk],
            )
            ids |= {name: device_id for device_id, name in inserted}
    updates = [p for p in plans if p.change.action == "update" and p.existing is not None]
    for chunk in _chunks(updates):
        await session.execute(
            update(Device), [{"id": ids[plan.data.name]} | _columns(plan, ids) for plan in chunk]
        )
    retagged = [p for p in plans if p.existing is None or "tags" in p.change.changes]
    for chunk in _chunks(retagged):
        await session.execute(
            delete(DeviceTag).where(DeviceTag.device_id.in_([ids[p.data.name] for p in chunk]))
        )
        tags = [{"device_id": ids[p.data.name], "tag": tag} for p in chunk for tag in p.data.tags]
        if tags:
            await session.execute(insert(DeviceTag), tags)
    changed = [p for p in plans if "paths" in p.change.changes]
    await _write_paths(session, vault, changed, ids, visible)
    if len(creates) >= _REFRESH_STATISTICS_AFTER:
        await refresh_statistics(session)
    return ids


async def refresh_statistics(session: AsyncSession) -> None:
    """Let the planner see a catalogue that grew in bulk.

    Plans cached on pooled connections were made for the small table; without fresh statistics
    PostgreSQL kept scanning, and each 10,000-row import got slower than the last.
    """
    for table in ("device", "device_tag", "control_path"):
        await session.execute(text(f"ANALYZE {table}"))


async def _write_paths(
    session: AsyncSession,
    vault: Vault,
    plans: list[_Plan],
    ids: dict[str, int],
    visible: set[int] | None,
) -> None:
    if not plans:
        return
    wanted = {p.data.name for p in plans}
    wanted |= {m.via for p in plans for m in p.paths or [] if getattr(m, "via", None)}
    devices = await _load_devices_by_name(session, wanted, visible)
    errors = _Errors()
    for plan in plans:
        device = devices[plan.data.name]
        await session.execute(delete(ControlPath).where(ControlPath.device_id == device.id))
        for index, (model, secret) in enumerate(
            zip(plan.paths or [], plan.path_secrets, strict=True)
        ):
            via_name = getattr(model, "via", None)
            via = devices.get(via_name) if via_name else None
            try:
                if via_name and via is None:
                    raise FieldError("via", f"no device {via_name!r}")
                path_service.check_fit(device, model.kind, via)
                path_service.check_options(
                    device, model.kind, model.options.model_dump(mode="json")
                )
            except FieldError as exc:
                errors.add(plan.row, f"paths.{index}.{exc.field}", exc.message)
                continue
            path = ControlPath(device_id=device.id, kind=model.kind)
            path_service.store(path, model, via, vault)
            if secret is not None:
                path.secret_ciphertext = vault.encrypt(secret)
            session.add(path)
    await session.flush()
    await _shared_console_ports(session, plans, devices, errors)
    if errors.items:
        raise errors.rejected()


async def _shared_console_ports(
    session: AsyncSession, plans: list[_Plan], devices: dict[str, Device], errors: _Errors
) -> None:
    rows = {devices[p.data.name].id: p.row for p in plans}
    taken = await session.execute(
        select(ControlPath.via_device_id, ControlPath.port, ControlPath.device_id)
        .where(ControlPath.kind == PathKind.CONSOLE_PORT)
        .order_by(ControlPath.via_device_id, ControlPath.port, ControlPath.id)
    )
    first: dict[tuple[int | None, int | None], int] = {}
    for via_id, port, device_id in taken:
        holder = first.setdefault((via_id, port), device_id)
        if holder != device_id and device_id in rows:
            errors.add(
                rows[device_id], "paths", f"console port {port} is already wired to another device"
            )


# Export --------------------------------------------------------------------------------------


async def export_devices(
    sessions: async_sessionmaker[AsyncSession], flt: device_service.DeviceFilter, fmt: str
) -> AsyncGenerator[bytes, None]:
    """Stream the filtered catalogue page by page, in its own short read transactions."""
    if fmt == "csv":
        yield csv_cells.line(CSV_COLUMNS)
    else:
        yield b"["
    first = True
    cursor: str | None = None
    while True:
        async with sessions() as session:
            page = await device_service.list_devices(session, flt, limit=_CHUNK, cursor=cursor)
            paths = (
                await _export_paths(session, [item.id for item in page.items])
                if fmt == "json"
                else {}
            )
        for item in page.items:
            if fmt == "csv":
                yield csv_cells.line(_csv_cells(item))
            else:
                record = device_service.as_fields(item) | {"paths": paths.get(item.id, [])}
                yield (b"" if first else b",") + b"\n" + json.dumps(record, default=str).encode()
            first = False
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    if fmt != "csv":
        yield b"\n]\n"


def _csv_cells(item: DeviceRead) -> list[str]:
    fields = device_service.as_fields(item)
    cells = []
    for column in CSV_COLUMNS:
        value = fields[column]
        if column == "tags":
            cells.append(",".join(value))
        elif column == "attributes":
            cells.append(json.dumps(value, sort_keys=True) if value else "")
        else:
            cells.append("" if value is None else str(value))
    return cells


async def _export_paths(session: AsyncSession, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Paths without their secrets; re-importing the file keeps the stored secrets."""
    found: dict[int, list[dict[str, Any]]] = {}
    rows = await session.execute(
        select(ControlPath, Device.name)
        .outerjoin(Device, ControlPath.via_device_id == Device.id)
        .where(ControlPath.device_id.in_(ids))
        .order_by(ControlPath.priority, ControlPath.id)
    )
    for path, via in rows:
        read = path_service.to_read(path, via)
        model = PATH_MODELS[read.kind]
        record = read.model_dump(mode="json", include=set(model.model_fields) - {"secret"})
        found.setdefault(path.device_id, []).append(record)
    return found
