"""Catalogue control paths → the agent's path messages, in priority order, secrets opened.

A device behind a console server or PDU is reached through that device's own `ssh` path
(address, credentials, dialect, pinned host key); a path whose box has none is left out of
power fallback and named when a console is asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agents.protocol import (
    ConsolePath,
    ConsolePortPath,
    Dialect,
    IpmiPath,
    Path,
    PduOutletPath,
    RedfishPath,
    SshTarget,
)
from app.errors import InvalidInput
from app.inventory.models import ControlPath, Device, PathKind
from app.vault import Vault

POWER_PATHS = (PathKind.IPMI, PathKind.REDFISH, PathKind.PDU_OUTLET)
BOOT_PATHS = (PathKind.IPMI, PathKind.REDFISH)
CONSOLE_PATHS = (PathKind.IPMI, PathKind.CONSOLE_PORT)
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
    boxes = await ssh_targets(session, vault, _vias(rows))
    # Opening thousands of secrets (Fernet) is CPU work: off the event loop, on loaded rows.
    return await asyncio.to_thread(_assemble, rows, boxes, vault, status)


def _assemble(
    rows: Sequence[ControlPath], boxes: dict[int, SshTarget], vault: Vault, status: bool
) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    for row in rows:
        if row.kind is PathKind.PDU_OUTLET:
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
    PDUs behind its outlets have no `ssh` path of their own."""
    if not device_ids:
        return {}
    rows = await session.execute(
        select(ControlPath.device_id, Device.name)
        .join(Device, Device.id == ControlPath.via_device_id)
        .where(ControlPath.device_id.in_(device_ids), ControlPath.kind == PathKind.PDU_OUTLET)
        .order_by(ControlPath.device_id, ControlPath.priority, ControlPath.id)
    )
    pdus: dict[int, list[str]] = {}
    for device_id, pdu in rows:
        pdus.setdefault(device_id, []).append(pdu)
    return {
        device_id: f"no usable power path: PDU {', '.join(names)} has no ssh control path; add "
        f"one with its address, credentials and dialect (POST /api/v1/devices/{names[0]}/paths)"
        for device_id, names in pdus.items()
    }


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
        wanted = "an ipmi or console_port" if via == "auto" else f"a {via}"
        raise InvalidInput(
            f"{device.name} has no console path; add {wanted} control path "
            f"(POST /api/v1/devices/{device.name}/paths)"
        )
    boxes = await ssh_targets(
        session, vault, {row.via_device_id for row in rows if row.via_device_id}
    )
    paths: list[ConsolePath] = []
    for row in rows:
        if row.kind is PathKind.IPMI:
            bmc = _bmc_path(row, vault)
            assert isinstance(bmc, IpmiPath)
            paths.append(bmc)
            continue
        server = boxes.get(row.via_device_id or 0)
        if server is None:
            name = await session.scalar(select(Device.name).where(Device.id == row.via_device_id))
            raise InvalidInput(
                f"console server {name} has no ssh control path; add one with its address, "
                f"credentials and dialect (POST /api/v1/devices/{name}/paths)"
            )
        paths.append(ConsolePortPath(server=server, port=row.port or 0))
    return paths


async def ssh_targets(
    session: AsyncSession, vault: Vault, device_ids: set[int]
) -> dict[int, SshTarget]:
    """Each device's first `ssh` path, as the agent reaches the box's own CLI."""
    if not device_ids:
        return {}
    rows = await session.scalars(
        select(ControlPath)
        .where(ControlPath.device_id.in_(sorted(device_ids)), ControlPath.kind == PathKind.SSH)
        .order_by(ControlPath.device_id, ControlPath.priority, ControlPath.id)
    )
    found: dict[int, SshTarget] = {}
    for row in rows:
        if row.device_id not in found:
            found[row.device_id] = SshTarget(
                address=row.address or "",
                username=row.username or "",
                password=_secret(row, vault),
                dialect=Dialect(row.options.get("dialect") or Dialect.SHELL),
                port=row.port or 22,
                host_key=row.options.get("host_key"),
            )
    return found


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
