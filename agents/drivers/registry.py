"""The drivers an agent starts with, keyed by control path kind."""

from __future__ import annotations

import os
from typing import Any

from agents.drivers.base import ConsoleDriver, HostKeyListener, OutletDriver
from agents.protocol import PathKind
from agents.runner import Driver
from agents.workers import WorkerPool

IPMI_LOGINS = 64  # logins in flight over all IPMI workers, as ipmipower's fan-out


def ipmi_workers() -> WorkerPool:
    """IPMI in worker processes, one per core (at most 4): pyghmi is CPU-bound at login."""
    processes = min(os.cpu_count() or 1, 4)
    return WorkerPool("ipmi", {"max_logins": IPMI_LOGINS // processes}, processes=processes)


def default_drivers(on_host_key: HostKeyListener | None = None) -> dict[str, Any]:
    """Drivers by path kind: IPMI (power, boot, SOL) in worker processes, Redfish in a thread
    pool, PDU outlets, console-server ports and hypervisor guests over SSH (asyncio).

    `on_host_key` hears of SSH host keys seen where none is pinned yet.
    """
    from agents.drivers.console_server import ConsoleServerDriver
    from agents.drivers.guests import GuestsDriver
    from agents.drivers.pdu import PduDriver
    from agents.drivers.redfish import RedfishDriver

    drivers: dict[str, Driver | OutletDriver | ConsoleDriver] = {
        PathKind.IPMI: ipmi_workers(),
        PathKind.REDFISH: RedfishDriver(),
        PathKind.PDU_OUTLET: PduDriver(on_host_key=on_host_key),
        PathKind.CONSOLE_PORT: ConsoleServerDriver(on_host_key=on_host_key),
        PathKind.LIBVIRT: GuestsDriver(on_host_key=on_host_key),
    }
    return drivers
