"""Sensors, the event log and inventory over Redfish, in the shapes IPMI gives them.

Read with pyghmi's Redfish client (its session, TLS pinning and errors), resource by resource,
because its own `get_sensor_data` keeps neither thresholds nor each sensor's health. Sensors
come from each chassis' `Thermal` (Temperatures, Fans) and `Power` (Voltages, PowerSupplies,
PowerControl); the event log from the system's `LogServices` (the manager's when the system
has none), each service's `Entries`; inventory from the system and its chassis (and the power
supplies). Every GET bypasses pyghmi's 30-second cache: a reading must be now's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from agents.drivers.base import Unsupported
from agents.protocol import (
    Fru,
    FruArea,
    Health,
    HealthData,
    HealthRead,
    LogEvent,
    Sensor,
    SensorState,
    Thresholds,
)

Get = Callable[[str], dict[str, Any]]
_MAX_PAGES = 100  # of one entries collection (`Members@odata.nextLink`)

# Redfish threshold properties (Thermal and Power schemas) and ours.
_THRESHOLDS = {
    "LowerThresholdFatal": "lower_non_recoverable",
    "LowerThresholdCritical": "lower_critical",
    "LowerThresholdNonCritical": "lower_non_critical",
    "UpperThresholdNonCritical": "upper_non_critical",
    "UpperThresholdCritical": "upper_critical",
    "UpperThresholdFatal": "upper_non_recoverable",
}
_HEALTH = {"OK": Health.OK, "Warning": Health.WARNING, "Critical": Health.CRITICAL}
_STATE = {Health.OK: SensorState.OK, Health.WARNING: SensorState.WARNING,
          Health.CRITICAL: SensorState.CRITICAL}  # fmt: skip
_NOT_READING = ("Absent", "Disabled", "StandbyOffline", "UnavailableOffline")
_NUMERIC = ("Temperature", "Fan", "Voltage")
_UNITS = {"Cel": "°C", "RPM": "RPM", "Percent": "%", "V": "V", "W": "W"}


def work(read: HealthRead) -> Callable[[Any, str], HealthData]:
    """The pool-thread work of one read, for `RedfishDriver._run`."""

    def run(command: Any, where: str) -> HealthData:
        def get(url: str) -> dict[str, Any]:
            found: dict[str, Any] = command._do_web_request(url, cache=False)
            return found

        if read is HealthRead.SENSORS:
            return HealthData(sensors=tuple(_sensors(get, _chassis(command, get))))
        if read is HealthRead.INVENTORY:
            return HealthData(inventory=tuple(_inventory(command, get, where)))
        services = _log_services(command, get)
        if not services:
            raise Unsupported(f"{where}: the BMC offers no log service")
        targets = (
            [_clear_target(service, where) for service in services]
            if (read is HealthRead.CLEAR_EVENTS)
            else []
        )  # every log must be clearable before any is cleared
        entries = [entry for service in services for entry in _entries(get, service)]
        for target in targets:
            command._do_web_request(target, {})
        return HealthData(events=tuple(_newest_first(entries)))

    return run


def _chassis(command: Any, get: Get) -> list[dict[str, Any]]:
    links = command.sysinfo.get("Links", {}).get("Chassis", [])
    if not links:
        collection = get("/redfish/v1/").get("Chassis", {}).get("@odata.id")
        links = get(collection).get("Members", []) if collection else []
    return [get(link["@odata.id"]) for link in links if "@odata.id" in link]


def _sensors(get: Get, chassis: list[dict[str, Any]]) -> Iterator[Sensor]:
    for one in chassis:
        if (thermal := one.get("Thermal", {}).get("@odata.id")) is not None:
            found = get(thermal)
            for item in found.get("Temperatures", []):
                yield _sensor(item, "Temperature", item.get("ReadingCelsius"), "°C")
            for item in found.get("Fans", []):
                unit = _UNITS.get(item.get("ReadingUnits", "RPM"), item.get("ReadingUnits", ""))
                yield _sensor(item, "Fan", item.get("Reading"), unit)
        if (power := one.get("Power", {}).get("@odata.id")) is not None:
            found = get(power)
            for item in found.get("Voltages", []):
                yield _sensor(item, "Voltage", item.get("ReadingVolts"), "V")
            for item in found.get("PowerSupplies", []):
                watts = item.get("PowerInputWatts", item.get("LastPowerOutputWatts"))
                yield _sensor(item, "Power Supply", watts, "W")
            for item in found.get("PowerControl", []):
                yield _sensor(item, "Power", item.get("PowerConsumedWatts"), "W")


def _sensor(item: dict[str, Any], kind: str, reading: Any, unit: str) -> Sensor:
    """One reading; its state is the BMC's own `Status.Health` (`Absent`: not present)."""
    status = item.get("Status") or {}
    limits = {ours: float(item[theirs]) for theirs, ours in _THRESHOLDS.items()
              if isinstance(item.get(theirs), int | float)}  # fmt: skip
    value = float(reading) if isinstance(reading, int | float) else None
    if status.get("State") in _NOT_READING or (value is None and kind in _NUMERIC):
        state = SensorState.NOT_PRESENT  # as IPMI's "reading unavailable": nothing to judge
    else:
        state = _STATE[_HEALTH.get(status.get("Health") or "OK", Health.WARNING)]
    words = [] if state is SensorState.OK else [f"health {status.get('Health') or 'unknown'}"]
    return Sensor(
        name=str(item.get("Name") or item.get("FanName") or item.get("MemberId") or "?"),
        type=kind,
        state=state,
        reading=None if state is SensorState.NOT_PRESENT else value,
        unit=unit if value is not None and state is not SensorState.NOT_PRESENT else "",
        states=tuple(words),
        thresholds=Thresholds(**limits) if limits else None,
    )


def _log_services(command: Any, get: Get) -> list[dict[str, Any]]:
    """The system's log services, else the manager's (its own audit log is a last resort)."""
    for owner in (command.sysinfo, command.bmcinfo):
        collection = (owner or {}).get("LogServices", {}).get("@odata.id")
        if collection:
            members = get(collection).get("Members", [])
            services = [get(member["@odata.id"]) for member in members]
            if services:
                return services
    return []


def _entries(get: Get, service: dict[str, Any]) -> Iterator[dict[str, Any]]:
    url = service.get("Entries", {}).get("@odata.id")
    for _ in range(_MAX_PAGES):
        if not url:
            return
        page = get(url)
        yield from page.get("Members", [])
        url = page.get("Members@odata.nextLink")


def _newest_first(entries: list[dict[str, Any]]) -> list[LogEvent]:
    events = [_event(entry) for entry in entries]
    events.sort(key=lambda event: event.time or "", reverse=True)  # ISO UTC: sorts as text
    return events


def _event(entry: dict[str, Any]) -> LogEvent:
    created = entry.get("Created")
    return LogEvent(
        id=str(entry.get("Id", "")),
        time=_utc(created) if isinstance(created, str) else None,
        severity=_HEALTH.get(entry.get("Severity") or "OK", Health.WARNING),
        message=str(entry.get("Message") or entry.get("MessageId") or ""),
        sensor=str(entry.get("SensorNumber") or entry.get("Name") or ""),
        sensor_type=str(entry.get("SensorType") or ""),
        asserted=entry.get("EntryCode") != "Deassert",
    )


def _utc(created: str) -> str | None:
    """`Created` (ISO 8601 with an offset) in UTC, to the second; None if it is not a time."""
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # no offset: taken as UTC, as BMCs keep time
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _clear_target(service: dict[str, Any], where: str) -> str:
    target = service.get("Actions", {}).get("#LogService.ClearLog", {}).get("target")
    if not isinstance(target, str) or not target:
        raise Unsupported(f"{where}: log service {service.get('Id', '?')} cannot be cleared")
    return target


def _inventory(command: Any, get: Get, where: str) -> Iterator[Fru]:
    system = command.sysinfo
    if not system:
        raise Unsupported(f"{where}: the BMC describes no computer system")
    chassis = _chassis(command, get)
    first = chassis[0] if chassis else {}
    yield Fru(
        id=0,
        name="System",
        product=_area(system, name="Model"),
        chassis=_area(first, name="ChassisType") if first else None,
    )
    number = 0
    for one in chassis:
        if (power := one.get("Power", {}).get("@odata.id")) is None:
            continue
        for supply in get(power).get("PowerSupplies", []):
            if not any(supply.get(key) for key in ("SerialNumber", "PartNumber", "Model")):
                continue
            number += 1
            yield Fru(id=number, name=str(supply.get("Name") or f"PSU {number}"),
                      product=_area(supply, name="Model"))  # fmt: skip


def _area(resource: dict[str, Any], *, name: str) -> FruArea:
    def text(key: str) -> str:
        value = resource.get(key)
        return "" if value is None else str(value).strip()

    return FruArea(
        manufacturer=text("Manufacturer"),
        name=text(name),
        part_number=text("PartNumber") or text("SKU"),
        serial_number=text("SerialNumber"),
        asset_tag=text("AssetTag"),
    )
