"""Xen guests through `xl`: a placeholder until the xl driver lands (docs/hypervisors.md)."""

from __future__ import annotations

from agents.drivers.base import ConsoleChannel, Unsupported
from agents.drivers.hosts import Hosts
from agents.protocol import BootDevice, Guest, GuestPath, HostPath, PowerAction, PowerState


class XlFlavour:
    """Refuses everything, saying so: the integrator replaces this with the real flavour."""

    def __init__(self, hosts: Hosts) -> None:
        self._hosts = hosts

    async def guests(self, host: HostPath) -> list[Guest]:
        raise Unsupported("xl: not built yet")

    async def power(self, path: GuestPath, action: PowerAction) -> PowerState:
        raise Unsupported("xl: not built yet")

    async def set_boot(self, path: GuestPath, device: BootDevice, persistent: bool) -> None:
        raise Unsupported("xl: not built yet")

    async def open_console(self, path: GuestPath, cols: int, rows: int) -> ConsoleChannel:
        raise Unsupported("xl: not built yet")
