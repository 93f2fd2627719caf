"""Control paths: how a device is reached, and which devices may stand in between."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agents.agent import OptionError, validate_path
from app.audit.models import EventType
from app.audit.service import diff, stage
from app.context import RequestContext
from app.errors import AlreadyExists, FieldError, NotFound
from app.inventory.models import ControlPath, Device, DeviceKind, PathKind, Site
from app.inventory.refs import as_id
from app.inventory.schemas import PATH_MODELS, PathRead, PathUpdate, PathUpdated, SecretChange
from app.vault import Vault

VIA_KINDS: dict[PathKind, frozenset[DeviceKind]] = {
    PathKind.CONSOLE_PORT: frozenset({DeviceKind.CONSOLE_SERVER, DeviceKind.KVM_SWITCH}),
    PathKind.PDU_OUTLET: frozenset({DeviceKind.PDU}),
    PathKind.LIBVIRT: frozenset({DeviceKind.HYPERVISOR}),
}
NOT_ON_VM = frozenset({PathKind.IPMI, PathKind.REDFISH, PathKind.PDU_OUTLET, PathKind.CONSOLE_PORT})
_STORED = ("priority", "address", "port", "username", "outlets", "domain")
_DESTINATION = ("address", "port", "via", "domain")
_PINS = {PathKind.SSH: "host_key", PathKind.REDFISH: "tls_fingerprint"}


def repointed(kind: PathKind, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The fields whose change would send the stored secret elsewhere; [] if it stays put.

    The one rule for PATCH and import: a secret follows its destination, never the path row,
    so an admin who cannot read it cannot re-point it at a listener of their own. `via` is
    compared as given on both sides (an id or a name). The user name is not a destination:
    the same device, behind the same pin, checks it.
    """
    moved = [name for name in _DESTINATION if before.get(name) != after.get(name)]
    pin = _PINS.get(kind)
    if pin is not None:
        old, new = _pin(before, pin), _pin(after, pin)
        # An unpinned ssh path trusts the first key it is shown, so a first pin only narrows
        # it; an unpinned Redfish path trusts no certificate, so any fingerprint is new.
        if old != new and (old is not None or kind is PathKind.REDFISH):
            moved.append(f"options.{pin}")
    return moved


def _pin(fields: Mapping[str, Any], name: str) -> str | None:
    value = (fields.get("options") or {}).get(name)
    if not value:
        return None
    return re.sub(r"[\s:]", "", value).lower() if name == "tls_fingerprint" else str(value)


def _where(path: ControlPath) -> dict[str, Any]:
    return {
        "address": path.address,
        "port": path.port,
        "via": path.via_device_id,
        "domain": path.domain,
        "options": path.options,
    }


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


def check_options(device: Device, kind: PathKind, options: Mapping[str, Any]) -> None:
    """Refuse a path no driver could use, saying what to fix (docs/catalogue.md).

    An ssh path is checked against the driver of what goes through its device: a console
    server's or KVM switch's must speak a console dialect, a PDU's a PDU dialect. The device's
    kind decides it, since `check_fit` only lets those kinds be a `via`.
    """
    through = [path_kind for path_kind, kinds in VIA_KINDS.items() if device.kind in kinds]
    try:
        validate_path(kind, options, through=through)
    except OptionError as exc:
        context = (
            f"{device.name!r} is a {device.kind}: " if kind is PathKind.SSH and through else ""
        )
        raise FieldError(exc.field, context + exc.message) from exc


async def _via(session: AsyncSession, ref: str | None, visible: set[int] | None) -> Device | None:
    """The device a path goes through, among the `visible` sites (None: every site)."""
    if ref is None:
        return None
    device_id = as_id(ref)
    via = await session.scalar(
        select(Device).where(Device.id == device_id if device_id else Device.name == ref)
    )
    if via is None or (visible is not None and via.site_id not in visible):
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
    session: AsyncSession,
    ctx: RequestContext,
    type_: EventType,
    device: Device,
    details: dict[str, Any],
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
    via = await _via(session, getattr(data, "via", None), ctx.principal.visible_site_ids())
    check_fit(device, data.kind, via)
    check_options(device, data.kind, data.options.model_dump(mode="json"))
    if via is not None and data.kind is PathKind.CONSOLE_PORT:
        await _check_port_free(session, via, data.port, None)
    path = ControlPath(device_id=device.id, kind=data.kind, secret_ciphertext=None)
    store(path, data, via, vault)
    session.add(path)
    await session.flush()
    read = to_read(path, via.name if via else None)
    await _audit(session, ctx, EventType.PATH_CREATED, device, {"after": _public(read)})
    return read


async def update_path(
    session: AsyncSession,
    ctx: RequestContext,
    vault: Vault,
    device: Device,
    path: ControlPath,
    data: PathUpdate,
) -> PathUpdated:
    """Merge the update over the stored path and validate the result as a new path would be.

    A re-pointed path loses its stored secret unless the update brings one (`repointed`).
    """
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
    had_secret, was = path.secret_ciphertext is not None, _where(path)
    merged_input = {k: v for k, v in (current | changes).items() if k in model.model_fields}
    if data.secret is not None:
        merged_input["secret"] = data.secret
    merged: Any = model.model_validate({k: v for k, v in merged_input.items() if v is not None})
    via = await _via(session, getattr(merged, "via", None), ctx.principal.visible_site_ids())
    check_fit(device, merged.kind, via)
    check_options(device, merged.kind, merged.options.model_dump(mode="json"))
    if via is not None and merged.kind is PathKind.CONSOLE_PORT:
        await _check_port_free(session, via, merged.port, path.id)
    store(path, merged, via, vault)
    moved = repointed(path.kind, was, _where(path))
    change: SecretChange | None = None
    if "secret" in model.model_fields:
        if data.secret is not None:
            change = SecretChange.REPLACED
        elif clear_secret:
            change = SecretChange.CLEARED
        elif not had_secret:
            change = SecretChange.UNSET
        else:
            change = SecretChange.DROPPED if moved else SecretChange.KEPT
    if change in (SecretChange.CLEARED, SecretChange.DROPPED):
        path.secret_ciphertext = None
    await session.flush()
    read = to_read(path, via.name if via else None)
    details = diff(before, _public(read))
    message = ""
    if change is not None:
        details["secret"] = change  # an enum member: the audit's redaction shows it as is
    if change is SecretChange.DROPPED:
        details["repointed"] = moved
        message = _dropped(moved, changes)
    await _audit(session, ctx, EventType.PATH_UPDATED, device, details)
    return PathUpdated(**read.model_dump(), secret_change=change, message=message)


def _dropped(moved: list[str], changes: dict[str, Any]) -> str:
    message = (
        f"{', '.join(moved)} changed, so the stored secret was dropped rather than sent to the "
        'new destination; send it again: PATCH this path with "secret"'
    )
    pin = next((name for name in moved if name.startswith("options.")), None)
    if pin is not None and pin.removeprefix("options.") not in (changes.get("options") or {}):
        message += f" (options are replaced as a whole: restate {pin} to keep the pin)"
    return message


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
    await _audit(session, ctx, EventType.PATH_DELETED, device, {"before": before})


async def check_links(session: AsyncSession, device: Device, *, kind_changed: bool) -> None:
    """After a device changed kind or site: its paths and the paths through it must still fit.

    A new kind also re-checks its ssh paths' options (a console server's dialect is no PDU's);
    a move alone does not, so a path stored before these checks never blocks one.
    """
    own = await session.execute(
        select(ControlPath, Device)
        .outerjoin(Device, ControlPath.via_device_id == Device.id)
        .where(ControlPath.device_id == device.id)
    )
    for path, via in own:
        check_fit(device, path.kind, via)
        if kind_changed and path.kind is PathKind.SSH:
            try:
                check_options(device, path.kind, path.options)
            except FieldError as exc:
                raise FieldError(
                    "kind", f"its ssh path would not work: {exc.message}; fix its {exc.field} first"
                ) from exc
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
