"""HTTP routes of the catalogue: parse, call one service function, return."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi import Path as FastApiPath
from fastapi.responses import StreamingResponse

from agents.protocol import Health, PowerState
from app.deps import SessionDep, VaultDep
from app.errors import InvalidInput
from app.exports import ExportSlot
from app.identity.auth import Ctx
from app.identity.models import Role
from app.inventory import devices, paths, racks, sites, transfer
from app.inventory.models import DeviceKind, DeviceStatus
from app.inventory.refs import MAX_ID
from app.inventory.schemas import (
    DeviceCreate,
    DeviceDetail,
    DeviceRead,
    DeviceUpdate,
    ImportResult,
    Page,
    PathCreate,
    PathRead,
    PathUpdate,
    PathUpdated,
    RackCreate,
    RackRead,
    RackUpdate,
    SiteCreate,
    SiteRead,
    SiteUpdate,
)

router = APIRouter()
PathId = Annotated[int, FastApiPath(ge=1, le=MAX_ID)]
SiteQuery = Annotated[str | None, Query(description="site slug or id")]


# Sites ---------------------------------------------------------------------------------------


@router.get("/sites", tags=["sites"])
async def list_sites(session: SessionDep, ctx: Ctx) -> list[SiteRead]:
    return [SiteRead.model_validate(site) for site in await sites.list_sites(session, ctx)]


@router.post("/sites", status_code=status.HTTP_201_CREATED, tags=["sites"])
async def create_site(session: SessionDep, ctx: Ctx, body: SiteCreate) -> SiteRead:
    return SiteRead.model_validate(await sites.create_site(session, ctx, body))


@router.get("/sites/{site}", tags=["sites"])
async def get_site(session: SessionDep, ctx: Ctx, site: str) -> SiteRead:
    return SiteRead.model_validate(
        await sites.site_for(session, ctx, site, Role.VIEWER, "reading a site")
    )


@router.patch("/sites/{site}", tags=["sites"])
async def update_site(session: SessionDep, ctx: Ctx, site: str, body: SiteUpdate) -> SiteRead:
    found = await sites.site_for(session, ctx, site, Role.ADMIN, "changing a site")
    return SiteRead.model_validate(await sites.update_site(session, ctx, found, body))


@router.delete("/sites/{site}", status_code=status.HTTP_204_NO_CONTENT, tags=["sites"])
async def delete_site(session: SessionDep, ctx: Ctx, site: str) -> None:
    found = await sites.site_for(session, ctx, site, Role.VIEWER, "deleting a site")
    await sites.delete_site(session, ctx, found)


# Racks ---------------------------------------------------------------------------------------


@router.get("/racks", tags=["racks"])
async def list_racks(session: SessionDep, ctx: Ctx, site: SiteQuery = None) -> list[RackRead]:
    return await racks.list_racks(session, ctx, site)


@router.post("/racks", status_code=status.HTTP_201_CREATED, tags=["racks"])
async def create_rack(session: SessionDep, ctx: Ctx, body: RackCreate) -> RackRead:
    return await racks.create_rack(session, ctx, body)


@router.get("/racks/{rack}", tags=["racks"])
async def get_rack(session: SessionDep, ctx: Ctx, rack: str, site: SiteQuery = None) -> RackRead:
    return racks.to_read(
        *await racks.rack_for(session, ctx, rack, site, Role.VIEWER, "reading a rack")
    )


@router.patch("/racks/{rack}", tags=["racks"])
async def update_rack(
    session: SessionDep, ctx: Ctx, rack: str, body: RackUpdate, site: SiteQuery = None
) -> RackRead:
    found, found_site = await racks.rack_for(
        session, ctx, rack, site, Role.ADMIN, "changing a rack"
    )
    return await racks.update_rack(session, ctx, found, found_site, body)


@router.delete("/racks/{rack}", status_code=status.HTTP_204_NO_CONTENT, tags=["racks"])
async def delete_rack(session: SessionDep, ctx: Ctx, rack: str, site: SiteQuery = None) -> None:
    found, found_site = await racks.rack_for(
        session, ctx, rack, site, Role.ADMIN, "deleting a rack"
    )
    await racks.delete_rack(session, ctx, found, found_site)


# Devices -------------------------------------------------------------------------------------


def device_filter(
    ctx: Ctx,
    select: Annotated[
        str | None, Query(description="node range, e.g. `web[01-20],db1`", max_length=4096)
    ] = None,
    site: SiteQuery = None,
    rack: Annotated[str | None, Query(description="rack name or id")] = None,
    kind: DeviceKind | None = None,
    tag: Annotated[list[str], Query(description="repeat to require several tags")] = [],  # noqa: B006
    status: DeviceStatus | None = None,
    parent: Annotated[str | None, Query(description="hypervisor of the vms listed")] = None,
    power_state: PowerState | None = None,
    reachable: Annotated[
        bool | None,
        Query(description="false: the last power read got no answer (never read: neither)"),
    ] = None,
    health: Annotated[
        Health | None,
        Query(description="the last verdict on its sensors; never read counts as unknown"),
    ] = None,
    q: Annotated[
        str | None, Query(description="text in name, serial, asset tag, vendor, model")
    ] = None,
) -> devices.DeviceFilter:
    """The filters of lists and exports, narrowed to the sites the caller may see."""
    return devices.DeviceFilter(
        select=select,
        site=site,
        rack=rack,
        kind=kind,
        tags=tag,
        status=status,
        parent=parent,
        power_state=power_state,
        reachable=reachable,
        health=health,
        q=q,
        site_ids=ctx.principal.visible_site_ids(),
    )


FilterDep = Annotated[devices.DeviceFilter, Depends(device_filter)]


@router.get("/devices", tags=["devices"])
async def list_devices(
    session: SessionDep,
    flt: FilterDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    sort: devices.Sort = "name",
) -> Page[DeviceRead]:
    return await devices.list_devices(session, flt, limit=limit, cursor=cursor, sort=sort)


@router.post("/devices", status_code=status.HTTP_201_CREATED, tags=["devices"])
async def create_device(session: SessionDep, ctx: Ctx, body: DeviceCreate) -> DeviceDetail:
    return await devices.create_device(session, ctx, body)


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"type": "object"}},
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@router.post("/devices/import", tags=["devices"], openapi_extra=_IMPORT_BODY)
async def import_devices(
    request: Request,
    session: SessionDep,
    ctx: Ctx,
    vault: VaultDep,
    dry_run: bool = False,
    format: Literal["csv", "json"] | None = Query(
        None, description="default: from Content-Type (text/csv or application/json)"
    ),
) -> ImportResult:
    """Upsert devices by name; any bad row rejects the whole file. JSON rows may carry `paths`."""
    raw = await request.body()
    fmt = format or ("csv" if "csv" in request.headers.get("content-type", "") else "json")
    if fmt == "csv":
        try:
            rows = transfer.parse_csv(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise InvalidInput("the CSV file must be UTF-8") from exc
    else:
        rows = transfer.parse_json(raw)
    result = await transfer.import_devices(session, ctx, vault, rows, dry_run=dry_run)
    if dry_run:
        await session.rollback()
    return result


@router.get(
    "/devices/export",
    tags=["devices"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
)
async def export_devices(
    request: Request,
    session: SessionDep,
    flt: FilterDep,
    export: ExportSlot,
    format: Literal["csv", "json"] = "json",
) -> StreamingResponse:
    """The filtered catalogue, streamed (JSON with paths, never their secrets). Too many
    exports at once: 429 with Retry-After."""
    flt = await devices.prepare(session, flt)
    media = "text/csv" if format == "csv" else "application/json"
    body = transfer.export_devices(request.app.state.sessions, flt, format)
    return export.response(body, media, f"devices.{format}")


@router.get("/devices/{device}", tags=["devices"])
async def get_device(session: SessionDep, ctx: Ctx, device: str) -> DeviceDetail:
    found = await devices.device_for(session, ctx, device, Role.VIEWER, "reading a device")
    return await devices.read_device(session, found)


@router.patch("/devices/{device}", tags=["devices"])
async def update_device(
    session: SessionDep, ctx: Ctx, device: str, body: DeviceUpdate
) -> DeviceDetail:
    found = await devices.device_for(session, ctx, device, Role.ADMIN, "changing a device")
    return await devices.update_device(session, ctx, found, body)


@router.delete("/devices/{device}", status_code=status.HTTP_204_NO_CONTENT, tags=["devices"])
async def delete_device(session: SessionDep, ctx: Ctx, device: str) -> None:
    found = await devices.device_for(session, ctx, device, Role.ADMIN, "deleting a device")
    await devices.delete_device(session, ctx, found)


# Control paths -------------------------------------------------------------------------------


@router.get("/devices/{device}/paths", tags=["paths"])
async def list_paths(session: SessionDep, ctx: Ctx, device: str) -> list[PathRead]:
    found = await devices.device_for(session, ctx, device, Role.VIEWER, "reading control paths")
    return await paths.list_paths(session, found)


@router.post("/devices/{device}/paths", status_code=status.HTTP_201_CREATED, tags=["paths"])
async def create_path(
    session: SessionDep, ctx: Ctx, vault: VaultDep, device: str, body: PathCreate
) -> PathRead:
    found = await devices.device_for(session, ctx, device, Role.ADMIN, "adding control paths")
    return await paths.create_path(session, ctx, vault, found, body)


@router.patch("/devices/{device}/paths/{path_id}", tags=["paths"])
async def update_path(
    session: SessionDep, ctx: Ctx, vault: VaultDep, device: str, path_id: PathId, body: PathUpdate
) -> PathUpdated:
    """Change a path; a new address, port, via or pin drops the stored secret unless one comes."""
    found = await devices.device_for(session, ctx, device, Role.ADMIN, "changing control paths")
    path = await paths.get_path(session, found, path_id)
    return await paths.update_path(session, ctx, vault, found, path, body)


@router.delete(
    "/devices/{device}/paths/{path_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["paths"]
)
async def delete_path(session: SessionDep, ctx: Ctx, device: str, path_id: PathId) -> None:
    found = await devices.device_for(session, ctx, device, Role.ADMIN, "removing control paths")
    await paths.delete_path(session, ctx, found, await paths.get_path(session, found, path_id))
