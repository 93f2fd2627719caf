"""A guest of the simulated hypervisor host, and what one of its commands leaves behind."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sim.machine import BootDevice, Machine

# xl.cfg(5) `boot` letters (libvirt's boot devices map to them): c hard disk, d CD-ROM,
# n network (PXE); the simulated firmware boots a CD like a disk but logs which it was
FIRMWARE = {"n": BootDevice.PXE, "c": BootDevice.NONE, "d": BootDevice.CDROM}


class Toolstack(StrEnum):
    """What manages a guest: Xen's `xl` (config files) or libvirt (`virsh`, definitions)."""

    XL = "xl"
    LIBVIRT = "libvirt"


def toolstacks(dialect: str) -> frozenset[Toolstack]:
    """`xl`, `libvirt` or `xl+libvirt` (a host with both) as toolstacks (ValueError if not)."""
    return frozenset(Toolstack(name) for name in dialect.split("+"))


class Console(Protocol):
    """An attached `xl console` / `virsh console` session."""

    def leave(self, status: int) -> None: ...


@dataclass(eq=False)
class Guest:
    """One guest and the order it runs with (`boot`, xl's letters; `menu`: libvirt's boot
    menu, which the simulated firmware answers by stopping in setup). A libvirt guest keeps
    its `definition` and, while it runs, the `live` copy it started from; an xl guest's
    configuration is its file in /etc/xen."""

    name: str
    uuid: str
    toolstack: Toolstack
    machine: Machine
    vcpus: int = 1
    memory_mib: int = 512
    boot: str = "c"
    menu: bool = False
    autostart: bool = False  # libvirt's flag (xl's is a link in /etc/xen/auto)
    domid: int | None = None
    started: float = 0.0
    reason: str = "unknown"  # libvirt's state reason: booted, destroyed, shutdown…
    definition: ET.Element | None = None
    live: ET.Element | None = None
    consoles: list[Console] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.domid is not None

    def firmware(self) -> BootDevice:
        """What the firmware boots from at this start."""
        return BootDevice.BIOS if self.menu else FIRMWARE.get(self.boot[:1], BootDevice.NONE)

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "toolstack": str(self.toolstack),
            "domid": self.domid,
            "boot": self.boot,
            "menu": self.menu,
            "screen": str(self.machine.firmware.screen),
            "counters": dict(self.machine.counters),
        }


@dataclass(frozen=True)
class Done:
    """A finished command: its exit status and what it wrote."""

    status: int = 0
    out: str = ""
    err: str = ""


@dataclass(frozen=True)
class Attach:
    """A console command: attach the channel to the guest's serial line after `banner`;
    `force` takes the console from any other session."""

    guest: Guest
    banner: str = ""
    force: bool = False
