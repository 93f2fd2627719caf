"""The drivers an agent starts with, keyed by control path kind."""

from __future__ import annotations

import os

from agents.runner import Driver

IPMI_LOGINS = 64  # logins in flight over all IPMI workers, as ipmipower's fan-out


def default_drivers() -> dict[str, Driver]:
    """IPMI in worker processes (pyghmi is CPU-bound at login); Redfish in a thread pool."""
    from agents.drivers.redfish import RedfishDriver
    from agents.workers import WorkerPool

    processes = min(os.cpu_count() or 1, 4)
    ipmi = WorkerPool("ipmi", {"max_logins": IPMI_LOGINS // processes}, processes=processes)
    return {"ipmi": ipmi, "redfish": RedfishDriver()}
