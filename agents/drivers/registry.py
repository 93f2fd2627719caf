"""The drivers an agent starts with, keyed by control path kind."""

from __future__ import annotations

import os

from agents.runner import Driver
from agents.workers import WorkerPool

IPMI_LOGINS = 64  # logins in flight over all IPMI workers, as ipmipower's fan-out


def ipmi_workers() -> WorkerPool:
    """IPMI in worker processes, one per core (at most 4): pyghmi is CPU-bound at login."""
    processes = min(os.cpu_count() or 1, 4)
    return WorkerPool("ipmi", {"max_logins": IPMI_LOGINS // processes}, processes=processes)


def default_drivers() -> dict[str, Driver]:
    """IPMI in worker processes, Redfish in a thread pool, PDU outlets over SSH (asyncio)."""
    from agents.drivers.pdu import PduDriver
    from agents.drivers.redfish import RedfishDriver

    return {"ipmi": ipmi_workers(), "redfish": RedfishDriver(), "pdu_outlet": PduDriver()}
