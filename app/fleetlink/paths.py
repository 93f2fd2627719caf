"""Catalogue control paths → the agent's path messages, in priority order, secrets opened.

A device behind a console server or PDU is reached through that device's own `ssh` path
(address, credentials, dialect, pinned host key); a path whose box has none is left out of
power fallback and named when a console is asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agents.protocol import (
    ConsolePath,
    ConsolePortPath,
    Dialect,
    GuestPath,
    HostPath,
    Hypervisor,
    IpmiPath,
    Path,
    PduOutletPath,
    RedfishPath,
    SshTarget,
)
from app.errors import InvalidInput
from app.inventory.models import ControlPath, Device, PathKind
from app.vault import Vault

POWER_PATHS = (PathKind.IPMI, PathKind.REDFISH, PathKind.PDU_OUTLET, PathKind.LIBVIRT)
BOOT_PATHS = (PathKind.IPMI, PathKind.REDFISH, PathKind.LIBVIRT)
CONSOLE_PATHS = (PathKind.IPMI, PathKind.CONSOLE_PORT, PathKind.LIBVIRT)
_CHUNK = 5000


async def power_paths(
    session: AsyncSession,
    vault: Vault,
    device_ids: Sequence[int],
    kinds: Sequence[PathKind] = POWER_PATHS,
    *,
    status: bool = False,
) -> dict[int, list[Path]]:
    """Each device's paths in priority order.

    For a `status` read, an outlet stands for the device only when it has no BMC: an outlet
    that is on says nothing about a server that is off, and a poll falling back to it would
    report drift that never happened.
    """
    rows: list[ControlPath] = []
    for start in range(0, len(device_ids), _CHUNK):
        rows.extend(
            await session.scalars(
                select(ControlPath)
                .where(
                    ControlPath.device_id.in_(device_ids[start : start + _CHUNK]),
                    ControlPath.kind.in_(kinds),
                )
                .order_by(ControlPath.device_id, ControlPath.priority, ControlPath.id)
            )
        )
    boxes = await _ssh_rows(session, vault, _vias(rows))
    # Opening thousands of secrets (Fernet) is CPU work: off the event loop, on loaded rows.
    return await asyncio.to_thread(_assemble, rows, boxes, vault, status)


def _assemble(
    rows: Sequence[ControlPath], ssh: dict[int, SshRow], vault: Vault, status: bool
) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    boxes, hosts = _boxes(ssh), _hosts(ssh)
    for row in rows:
        if row.kind is PathKind.LIBVIRT:
            if (guest := _guest(row, hosts)) is not None:
                found.setdefault(row.device_id, []).append(guest)
        elif row.kind is PathKind.PDU_OUTLET:
            pdu = boxes.get(row.via_device_id or 0)
            if pdu is not None:
                found.setdefault(row.device_id, []).append(
                    PduOutletPath(pdu=pdu, outlets=tuple(row.outlets or ()))
                )
        else:
            found.setdefault(row.device_id, []).append(_bmc_path(row, vault))
    if status:
        for device_id, paths in found.items():
            bmcs: list[Path] = [path for path in paths if not isinstance(path, PduOutletPath)]
            found[device_id] = bmcs or paths
    return found


async def unusable_power(session: AsyncSession, device_ids: Sequence[int]) -> dict[int, str]:
    """Why each of these devices (given no power path by `power_paths`) cannot be reached: the
    PDUs behind its outlets have no `ssh` path of their own, or its hypervisor none that names
    the hypervisor."""
    if not device_ids:
        return {}
    rows = await session.execute(
        select(ControlPath.device_id, ControlPath.kind, Device.name)
        .join(Device, Device.id == ControlPath.via_device_id)
        .where(
            ControlPath.device_id.in_(device_ids),
            ControlPath.kind.in_((PathKind.PDU_OUTLET, PathKind.LIBVIRT)),
        )
        .order_by(ControlPath.device_id, ControlPath.priority, ControlPath.id)
    )
    boxes: dict[int, list[tuple[PathKind, str]]] = {}
    for device_id, kind, box in rows:
        boxes.setdefault(device_id, []).append((kind, box))
    return {device_id: _unusable(found) for device_id, found in boxes.items()}


def _unusable(boxes: list[tuple[PathKind, str]]) -> str:
    kind, first = boxes[0]
    names = ", ".join(name for _, name in boxes)
    add = f"(POST /api/v1/devices/{first}/paths)"
    if kind is PathKind.LIBVIRT:
        return (
            f"no usable power path: hypervisor {names} has no ssh control path naming its "
            f'hypervisor; add one with "options": {{"hypervisor": "libvirt"}} or "xl" {add}'
        )
    return (
        f"no usable power path: PDU {names} has no ssh control path; add one with its address, "
        f"credentials and dialect {add}"
    )


async def console_paths(
    session: AsyncSession, vault: Vault, device: Device, via: str
) -> list[ConsolePath]:
    """The device's console paths (`via`: "auto" or a path kind); else say what to add."""
    kinds = CONSOLE_PATHS if via == "auto" else (PathKind(via),)
    rows = list(
        await session.scalars(
            select(ControlPath)
            .where(ControlPath.device_id == device.id, ControlPath.kind.in_(kinds))
            .order_by(ControlPath.priority, ControlPath.id)
        )
    )
    if not rows:
        wanted = "an ipmi, console_port or libvirt" if via == "auto" else f"a {via}"
        raise InvalidInput(
            f"{device.name} has no console path; add {wanted} control path "
            f"(POST /api/v1/devices/{device.name}/paths)"
        )
    ssh = await _ssh_rows(session, vault, _vias(rows))
    boxes, hosts = _boxes(ssh), _hosts(ssh)
    paths: list[ConsolePath] = []
    for row in rows:
        if row.kind is PathKind.IPMI:
            bmc = _bmc_path(row, vault)
            assert isinstance(bmc, IpmiPath)
            paths.append(bmc)
            continue
        if row.kind is PathKind.LIBVIRT:
            guest = _guest(row, hosts)
            if guest is None:
                name = await _name(session, row.via_device_id)
                raise InvalidInput(
                    f"hypervisor {name} has no ssh control path with a hypervisor option; add "
                    f"one (POST /api/v1/devices/{name}/paths, docs/hypervisors.md)"
                )
            paths.append(guest)
            continue
        server = boxes.get(row.via_device_id or 0)
        if server is None:
            name = await _name(session, row.via_device_id)
            raise InvalidInput(
                f"console server {name} has no ssh control path; add one with its address, "
                f"credentials and dialect (POST /api/v1/devices/{name}/paths)"
            )
        paths.append(ConsolePortPath(server=server, port=row.port or 0))
    return paths


async def _name(session: AsyncSession, device_id: int | None) -> str | None:
    return await session.scalar(select(Device.name).where(Device.id == device_id))


async def ssh_targets(
    session: AsyncSession, vault: Vault, device_ids: set[int]
) -> dict[int, SshTarget]:
    """Each device's first `ssh` path, as the agent reaches the box's own CLI."""
    return _boxes(await _ssh_rows(session, vault, device_ids))


async def host_path(session: AsyncSession, vault: Vault, device: Device) -> HostPath:
    """How the agent drives a hypervisor's guests: its (first) ssh path, which must name the
    hypervisor; else say what to add."""
    host = _hosts(await _ssh_rows(session, vault, {device.id})).get(device.id)
    if host is None:
        raise InvalidInput(
            f"{device.name} has no ssh control path with a hypervisor option; add one: "
            '{"kind": "ssh", "address": …, "username": …, "secret": …, "options": '
            '{"hypervisor": "libvirt"}} (docs/hypervisors.md)'
        )
    return host


SshRow = tuple[SshTarget, dict[str, Any]]  # a box's ssh path, and its options


async def _ssh_rows(session: AsyncSession, vault: Vault, device_ids: set[int]) -> dict[int, SshRow]:
    """Each device's first `ssh` path, with its options."""
    if not device_ids:
        return {}
    rows = await session.scalars(
        select(ControlPath)
        .where(ControlPath.device_id.in_(sorted(device_ids)), ControlPath.kind == PathKind.SSH)
        .order_by(ControlPath.device_id, ControlPath.priority, ControlPath.id)
    )
    found: dict[int, SshRow] = {}
    for row in rows:
        if row.device_id in found:
            continue
        target = SshTarget(
            address=row.address or "",
            username=row.username or "",
            password=_secret(row, vault),
            dialect=Dialect(row.options.get("dialect") or Dialect.SHELL),
            port=row.port or 22,
            host_key=row.options.get("host_key"),
        )
        found[row.device_id] = (target, row.options)
    return found


def _boxes(ssh: dict[int, SshRow]) -> dict[int, SshTarget]:
    return {device: target for device, (target, _) in ssh.items()}


def _hosts(ssh: dict[int, SshRow]) -> dict[int, HostPath]:
    """The hypervisor hosts among these boxes: those whose ssh path names a hypervisor."""
    return {
        device: HostPath(target, Hypervisor(options["hypervisor"]),
                         str(options.get("uri") or "qemu:///system"))
        for device, (target, options) in ssh.items()
        if options.get("hypervisor")
    }  # fmt: skip


def _guest(row: ControlPath, hosts: dict[int, HostPath]) -> GuestPath | None:
    host = hosts.get(row.via_device_id or 0)
    if host is None or not row.domain:
        return None
    return GuestPath(host, row.domain, str(row.options.get("name") or ""))


def _vias(rows: Sequence[ControlPath]) -> set[int]:
    return {row.via_device_id for row in rows if row.via_device_id is not None}


def _secret(row: ControlPath, vault: Vault) -> str:
    return vault.decrypt(row.secret_ciphertext) if row.secret_ciphertext else ""


def redfish_url(address: str | None, port: int | None) -> str:
    address = address or ""
    return address if address.startswith("https://") else f"https://{address}:{port or 443}"


def bmc_endpoint(kind: PathKind, address: str | None, port: int | None) -> str | None:
    """The endpoint the agent names a BMC path by in its messages ("ipmi 10.0.0.5:623: …"),
    as `_bmc_path` builds it; None for the kinds reached through another device."""
    if kind is PathKind.IPMI:
        return IpmiPath(address or "", "", "", port=port or 623).endpoint
    if kind is PathKind.REDFISH:
        return RedfishPath(redfish_url(address, port), "", "").endpoint
    return None


def _bmc_path(row: ControlPath, vault: Vault) -> Path:
    if row.kind is PathKind.IPMI:
        return IpmiPath(
            address=row.address or "",
            username=row.username or "",
            password=_secret(row, vault),
            port=row.port or 623,
            cipher_suite=int(row.options.get("cipher_suite") or 0),
            privilege=str(row.options.get("privilege") or "administrator"),
        )
    return RedfishPath(
        url=redfish_url(row.address, row.port),
        username=row.username or "",
        password=_secret(row, vault),
        fingerprint=row.options.get("tls_fingerprint"),
    )
