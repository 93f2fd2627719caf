"""Control paths: how a device is reached, and which devices may stand in between."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import diff, stage
from app.context import RequestContext
from app.errors import AlreadyExists, FieldError, NotFound
from app.inventory.models import ControlPath, Device, DeviceKind, PathKind, Site
from app.inventory.refs import as_id
from app.inventory.schemas import PATH_MODELS, PathRead, PathUpdate
from app.vault import Vault

VIA_KINDS: dict[PathKind, frozenset[DeviceKind]] = {
    PathKind.CONSOLE_PORT: frozenset({DeviceKind.CONSOLE_SERVER, DeviceKind.KVM_SWITCH}),
    PathKind.PDU_OUTLET: frozenset({DeviceKind.PDU}),
    PathKind.LIBVIRT: frozenset({DeviceKind.HYPERVISOR}),
}
NOT_ON_VM = frozenset({PathKind.IPMI, PathKind.REDFISH, PathKind.PDU_OUTLET, PathKind.CONSOLE_PORT})
_STORED = ("priority", "address", "port", "username", "outlets", "domain")


def to_read(path: ControlPath, via: str | None) -> PathRead:
    return PathRead(
        id=path.id,
        kind=path.kind,
        priority=path.priority,
        address=path.address,
        port=path.port,
        username=path.username,
        secret="set" if path.secret_ciphertext else None,
        via=via,
        outlets=path.outlets,
        domain=path.domain,
        options=path.options,
        created_at=path.created_at,
        updated_at=path.updated_at,
    )


async def list_paths(session: AsyncSession, device: Device) -> list[PathRead]:
    via = Device.__table__.alias("via")
    rows = await session.execute(
        select(ControlPath, via.c.name)
        .outerjoin(via, ControlPath.via_device_id == via.c.id)
        .where(ControlPath.device_id == device.id)
        .order_by(ControlPath.priority, ControlPath.id)
    )
    return [to_read(path, via_name) for path, via_name in rows]


async def get_path(session: AsyncSession, device: Device, path_id: int) -> ControlPath:
    path = await session.scalar(
        select(ControlPath).where(ControlPath.id == path_id, ControlPath.device_id == device.id)
    )
    if path is None:
        raise NotFound(f"device {device.name!r} has no control path {path_id}")
    return path


def check_fit(device: Device, kind: PathKind, via: Device | None) -> None:
    """The rules that tie a path's kind to the device and to the device it goes through."""
    if device.kind is DeviceKind.VM and kind in NOT_ON_VM:
        raise FieldError("kind", f"a vm has no {kind}; reach it through `libvirt` or `ssh`")
    if kind is PathKind.LIBVIRT and device.kind is not DeviceKind.VM:
        raise FieldError("kind", f"a libvirt path is for vms; {device.name!r} is a {device.kind}")
    if via is None:
        return
    if via.id == device.id:
        raise FieldError("via", "a device cannot be reached through itself")
    allowed = VIA_KINDS[kind]
    if via.kind not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise FieldError("via", f"{via.name!r} is a {via.kind}; a {kind} path needs a {wanted}")
    if via.site_id != device.site_id:
        raise FieldError("via", f"{via.name!r} is at another site than {device.name!r}")
    if kind is PathKind.LIBVIRT and device.parent_id != via.id:
        raise FieldError("via", "a vm's libvirt path goes through its parent hypervisor")


async def _via(session: AsyncSession, ref: str | None) -> Device | None:
    if ref is None:
        return None
    device_id = as_id(ref)
    via = await session.scalar(
        select(Device).where(Device.id == device_id if device_id else Device.name == ref)
    )
    if via is None:
        raise FieldError("via", f"no device {ref!r}")
    return via


async def _check_port_free(
    session: AsyncSession, via: Device, port: int, path_id: int | None
) -> None:
    holder = await session.execute(
        select(ControlPath.id, Device.name)
        .join(Device, ControlPath.device_id == Device.id)
        .where(
            ControlPath.kind == PathKind.CONSOLE_PORT,
            ControlPath.via_device_id == via.id,
            ControlPath.port == port,
        )
    )
    for other_id, name in holder:
        if other_id != path_id:
            raise AlreadyExists(f"port {port} of {via.name!r} is already wired to {name!r}")


def store(path: ControlPath, data: Any, via: Device | None, vault: Vault) -> None:
    for name in _STORED:
        setattr(path, name, getattr(data, name, None))
    path.via_device_id = via.id if via else None
    path.options = data.options.model_dump(mode="json")
    secret: SecretStr | None = getattr(data, "secret", None)
    if secret is not None:
        path.secret_ciphertext = vault.encrypt(secret.get_secret_value())


async def _site_slug(session: AsyncSession, device: Device) -> str | None:
    return await session.scalar(select(Site.slug).where(Site.id == device.site_id))


def _public(read: PathRead) -> dict[str, Any]:
    return read.model_dump(mode="json", exclude={"created_at", "updated_at"})


async def _audit(
    session: AsyncSession, ctx: RequestContext, type_: str, device: Device, details: dict[str, Any]
) -> None:
    stage(
        session,
        ctx.event(
            type_,
            target_type="device",
            target_id=device.id,
            target_name=device.name,
            site=await _site_slug(session, device),
            details=details,
        ),
    )


async def create_path(
    session: AsyncSession, ctx: RequestContext, vault: Vault, device: Device, data: Any
) -> PathRead:
    """`data` is one member of the PathCreate union."""
    via = await _via(session, getattr(data, "via", None))
    check_fit(device, data.kind, via)
    if via is not None and data.kind is PathKind.CONSOLE_PORT:
        await _check_port_free(session, via, data.port, None)
    path = ControlPath(device_id=device.id, kind=data.kind, secret_ciphertext=None)
    store(path, data, via, vault)
    session.add(path)
    await session.flush()
    read = to_read(path, via.name if via else None)
    await _audit(session, ctx, "path.created", device, {"after": _public(read)})
    return read


async def update_path(
    session: AsyncSession,
    ctx: RequestContext,
    vault: Vault,
    device: Device,
    path: ControlPath,
    data: PathUpdate,
) -> PathRead:
    """Merge the update over the stored path and validate the result as a new path would be."""
    via_name = await session.scalar(select(Device.name).where(Device.id == path.via_device_id))
    before = _public(to_read(path, via_name))
    current: dict[str, Any] = {
        "kind": path.kind,
        "priority": path.priority,
        "address": path.address,
        "port": path.port,
        "username": path.username,
        "via": via_name,
        "outlets": path.outlets,
        "domain": path.domain,
        "options": path.options,
    }
    model = PATH_MODELS[path.kind]
    changes = data.model_dump(exclude_unset=True)
    foreign = sorted(set(changes) - set(model.model_fields))
    if foreign:
        raise FieldError(foreign[0], f"does not apply to {path.kind} paths")
    clear_secret = "secret" in changes and changes.pop("secret") is None
    merged_input = {k: v for k, v in (current | changes).items() if k in model.model_fields}
    if data.secret is not None:
        merged_input["secret"] = data.secret
    merged: Any = model.model_validate({k: v for k, v in merged_input.items() if v is not None})
    via = await _via(session, getattr(merged, "via", None))
    check_fit(device, merged.kind, via)
    if via is not None and merged.kind is PathKind.CONSOLE_PORT:
        await _check_port_free(session, via, merged.port, path.id)
    store(path, merged, via, vault)
    if clear_secret:
        path.secret_ciphertext = None
    await session.flush()
    read = to_read(path, via.name if via else None)
    details = diff(before, _public(read))
    if data.secret is not None or clear_secret:
        details["secret"] = "cleared" if clear_secret else "replaced"
    await _audit(session, ctx, "path.updated", device, details)
    return read


async def delete_path(
    session: AsyncSession, ctx: RequestContext, device: Device, path: ControlPath
) -> None:
    site = await session.get(Site, device.site_id)
    if site is not None:
        ctx.require_ticket(site.slug, site.require_ticket, "removing a control path")
    via_name = await session.scalar(select(Device.name).where(Device.id == path.via_device_id))
    before = _public(to_read(path, via_name))
    await session.delete(path)
    await session.flush()
    await _audit(session, ctx, "path.deleted", device, {"before": before})


async def check_links(session: AsyncSession, device: Device) -> None:
    """After a device changed kind or site: its paths and the paths through it must still fit."""
    own = await session.execute(
        select(ControlPath, Device)
        .outerjoin(Device, ControlPath.via_device_id == Device.id)
        .where(ControlPath.device_id == device.id)
    )
    for path, via in own:
        check_fit(device, path.kind, via)
    through = await session.execute(
        select(ControlPath, Device)
        .join(Device, ControlPath.device_id == Device.id)
        .where(ControlPath.via_device_id == device.id)
    )
    for path, user in through:
        try:
            check_fit(user, path.kind, device)
        except FieldError as exc:
            raise FieldError(
                "kind" if exc.field == "via" else exc.field,
                f"{user.name!r} is reached through this device: {exc.message}",
            ) from exc
