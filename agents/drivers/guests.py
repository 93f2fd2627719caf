"""Hypervisor guests: the one driver of `libvirt` paths, whatever toolstack the host runs.

A guest's path is `libvirt` whether its host runs libvirt or Xen's own `xl`; the host's ssh
path says which (`options.hypervisor`), and each call goes to that flavour. Both flavours share
one pool of host connections (`Hosts`), so a poll of a host's guests logs in once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from agents.drivers import ssh
from agents.drivers.base import (
    ConsoleChannel,
    HostKeyListener,
    OptionError,
    Refused,
    Unsupported,
)
from agents.drivers.guest_console import FollowingConsole
from agents.drivers.hosts import Hosts
from agents.drivers.libvirt import LibvirtFlavour
from agents.drivers.xl import XlFlavour
from agents.protocol import (
    BootDevice,
    ConsolePath,
    Dialect,
    Guest,
    GuestPath,
    HostPath,
    Hypervisor,
    Path,
    PowerAction,
    PowerState,
)


class Flavour(Protocol):
    async def guests(self, host: HostPath) -> list[Guest]: ...
    async def power(self, path: GuestPath, action: PowerAction) -> PowerState: ...
    async def set_boot(self, path: GuestPath, device: BootDevice, persistent: bool) -> None: ...
    async def open_console(self, path: GuestPath, cols: int, rows: int) -> ConsoleChannel: ...


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# driver[+transport]://[user@][host][:port]/[path][?params], as libvirt documents its URIs:
# no whitespace or control characters (the URI is one argument, but also a human's to read).
_URI = re.compile(r"[a-z][a-z0-9]*(\+[a-z0-9]+)?://[^\s/?#]*/[^\s?#]*(\?[^\s#]*)?")


class GuestsDriver:
    """`PowerDriver`, `BootDriver`, `ConsoleDriver` and `GuestDriver` for guests of hypervisor
    hosts: each call goes to the flavour the guest's host names (docs/hypervisors.md)."""

    def __init__(
        self,
        *,
        on_host_key: HostKeyListener | None = None,
        settings: ssh.SshSettings | None = None,
    ) -> None:
        self._hosts = Hosts(on_host_key=on_host_key, settings=settings)
        self._flavours: dict[Hypervisor, Flavour] = {
            Hypervisor.LIBVIRT: LibvirtFlavour(self._hosts),
            Hypervisor.XL: XlFlavour(self._hosts),
        }

    @staticmethod
    def validate_host(options: Mapping[str, Any]) -> None:
        """The options of a hypervisor host's ssh path: which toolstack drives its guests, and
        for libvirt which URI (the default `qemu:///system` when none)."""
        hypervisor = options.get("hypervisor")
        if hypervisor is None:
            raise OptionError(
                "options.hypervisor",
                "a hypervisor's ssh path must say how its guests are driven: set "
                f"{' or '.join(Hypervisor)} (docs/hypervisors.md)",
            )
        if hypervisor not in set(Hypervisor):
            raise OptionError(
                "options.hypervisor",
                f"{hypervisor!r} is no hypervisor driver; use {' or '.join(Hypervisor)}",
            )
        if ssh.dialect(options) != Dialect.SHELL:
            raise OptionError(
                "options.dialect",
                f"a hypervisor host is driven through its shell: use dialect {Dialect.SHELL} "
                "(or none)",
            )
        uri = options.get("uri")
        if uri is None:
            return
        if hypervisor != Hypervisor.LIBVIRT:
            raise OptionError(
                "options.uri", f"only a libvirt host takes a uri; {hypervisor} drives its own"
            )
        if not isinstance(uri, str) or not uri.isprintable() or _URI.fullmatch(uri) is None:
            raise OptionError(
                "options.uri",
                "must be a libvirt URI such as qemu:///system, xen:///system or "
                "qemu+ssh://user@host/system (driver[+transport]://[user@][host][:port]/path), "
                "without spaces or control characters",
            )

    async def guests(self, host: HostPath) -> list[Guest]:
        return await self._flavour(host).guests(host)

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        guest = _guest(path)
        return await self._flavour(guest.host).power(guest, action)

    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        guest = _guest(path)
        await self._flavour(guest.host).set_boot(guest, device, persistent)

    async def open_console(
        self, path: ConsolePath, *, cols: int = 80, rows: int = 25
    ) -> ConsoleChannel:
        guest = _guest(path)
        flavour = self._flavour(guest.host)
        first = await flavour.open_console(guest, cols, rows)
        return FollowingConsole(
            lambda c, r: flavour.open_console(guest, c, r),
            lambda: flavour.power(guest, PowerAction.STATUS),
            first,
            cols=cols,
            rows=rows,
        )

    async def close(self) -> None:
        """Log out of every host."""
        await self._hosts.close()

    def _flavour(self, host: HostPath) -> Flavour:
        flavour = self._flavours.get(host.hypervisor)
        if flavour is None:
            raise Unsupported(
                f"hypervisor {host.endpoint}: no guest driver for {host.hypervisor!r}; set the "
                f"host's ssh path option hypervisor to {' or '.join(Hypervisor)}"
            )
        return flavour


def _guest(path: Path | ConsolePath) -> GuestPath:
    if not isinstance(path, GuestPath):
        raise Unsupported(f"the guest driver cannot use a {path.kind} path ({path.endpoint})")
    if _UUID.fullmatch(path.domain) is None:  # also never an option to virsh or xl
        raise Refused(
            f"hypervisor {path.host.endpoint}: the guest's domain {path.domain!r} is not a "
            "UUID; sync the host, which stores each guest's UUID"
        )
    return path
