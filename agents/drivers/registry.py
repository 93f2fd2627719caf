"""The drivers an agent starts with, keyed by control path kind."""

from __future__ import annotations

from agents.runner import Driver


def default_drivers() -> dict[str, Driver]:
    from agents.drivers.ipmi import IpmiDriver
    from agents.drivers.redfish import RedfishDriver

    return {"ipmi": IpmiDriver(), "redfish": RedfishDriver()}
