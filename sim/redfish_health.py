"""The hardware health a simulated Redfish BMC serves: Thermal, Power and the SEL as a LogService.

Shaped like DMTF's mockups (Thermal.v1_7, Power.v1_7, LogService.v1_1, LogEntry.v1_9) over the
same `Sensors` the IPMI simulator reads, so both protocols report the same readings and events.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from sim import fru
from sim.sel import CAPACITY, DEASSERTION, EventType
from sim.sensors import (
    ANALOG,
    BY_NUMBER,
    PSUS,
    Analog,
    Health,
    PsuState,
    Sensors,
    SensorType,
    Threshold,
    Unit,
)

Resource = dict[str, Any]

# Redfish property suffixes of each threshold ("Fatal" is IPMI's non-recoverable)
THRESHOLD_NAMES = {
    Threshold.LOWER_NON_CRITICAL: "LowerThresholdNonCritical",
    Threshold.LOWER_CRITICAL: "LowerThresholdCritical",
    Threshold.LOWER_NON_RECOVERABLE: "LowerThresholdFatal",
    Threshold.UPPER_NON_CRITICAL: "UpperThresholdNonCritical",
    Threshold.UPPER_CRITICAL: "UpperThresholdCritical",
    Threshold.UPPER_NON_RECOVERABLE: "UpperThresholdFatal",
}
# LogEntry.SensorType names of the IPMI sensor types
SENSOR_TYPES: dict[int, str] = {
    SensorType.TEMPERATURE: "Temperature",
    SensorType.VOLTAGE: "Voltage",
    SensorType.FAN: "Fan",
    SensorType.POWER_SUPPLY: "Power Supply / Converter",
    SensorType.POWER_UNIT: "PowerUnit",
    SensorType.OTHER_UNITS: "Other Units-based Sensor",
    SensorType.EVENT_LOGGING: "Event Logging Disabled",
}
UNITS = {Unit.CELSIUS: "C", Unit.VOLTS: "V", Unit.WATTS: "W", Unit.RPM: "RPM"}
# (event text, severity when asserted) by sensor type and sensor-specific offset
DISCRETE_EVENTS: dict[tuple[int, int], tuple[str, Health]] = {
    (SensorType.POWER_SUPPLY, 0): ("Presence detected", Health.OK),
    (SensorType.POWER_SUPPLY, 1): ("Power supply failure detected", Health.CRITICAL),
    (SensorType.POWER_SUPPLY, 3): ("Power supply input lost (AC/DC)", Health.CRITICAL),
    (SensorType.POWER_UNIT, 0): ("Power off/down", Health.OK),
    (SensorType.EVENT_LOGGING, 2): ("Log area reset/cleared", Health.OK),
}
PSU_STATUS = {
    PsuState.OK: {"State": "Enabled", "Health": "OK"},
    PsuState.FAILED: {"State": "Enabled", "Health": "Critical"},
    PsuState.AC_LOST: {"State": "UnavailableOffline", "Health": "Critical"},
    PsuState.ABSENT: {"State": "Absent"},
}


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _status(sensors: Sensors, sensor: Analog) -> dict[str, str]:
    if sensors.raw(sensor) is None:  # the machine is off: not read, nothing wrong
        return {"State": "StandbyOffline", "Health": "OK"}
    return {"State": "Enabled", "Health": str(sensors.health(sensor))}


def _thresholds(sensor: Analog) -> Resource:
    return {
        THRESHOLD_NAMES[threshold]: sensor.value(raw)
        for threshold, raw in sorted(sensor.raw_thresholds.items())
    }


def _member(url: str, group: str, index: int, sensor: Analog, sensors: Sensors) -> Resource:
    return {
        "@odata.id": f"{url}#/{group}/{index}",
        "MemberId": str(index),
        "Name": sensor.name,
        "SensorNumber": sensor.number,
        "Status": _status(sensors, sensor),
        **_thresholds(sensor),
    }


def thermal(url: str, sensors: Sensors) -> Resource:
    """The chassis' Thermal resource: temperatures and fans."""
    temperatures = [s for s in ANALOG if s.type is SensorType.TEMPERATURE]
    fans = [s for s in ANALOG if s.type is SensorType.FAN]
    return {
        "@odata.id": url,
        "@odata.type": "#Thermal.v1_7_0.Thermal",
        "Id": "Thermal",
        "Name": "Thermal",
        "Temperatures": [
            {
                **_member(url, "Temperatures", index, sensor, sensors),
                "ReadingCelsius": sensors.value(sensor),
                "MinReadingRangeTemp": 0,
                "MaxReadingRangeTemp": sensor.value(255),
                "PhysicalContext": "Intake" if sensor.number == 1 else "CPU",
            }
            for index, sensor in enumerate(temperatures)
        ],
        "Fans": [
            {
                **_member(url, "Fans", index, sensor, sensors),
                "Reading": sensors.value(sensor),
                "ReadingUnits": "RPM",
                "MinReadingRange": 0,
                "MaxReadingRange": sensor.value(255),
                "PhysicalContext": "Fan",
            }
            for index, sensor in enumerate(fans)
        ],
    }


def power(url: str, sensors: Sensors, identity: fru.Identity) -> Resource:
    """The chassis' Power resource: consumption, voltage rails and power supplies."""
    meter = next(s for s in ANALOG if s.unit is Unit.WATTS)
    rails = [s for s in ANALOG if s.type is SensorType.VOLTAGE]
    supplies = []
    for index, psu in enumerate(PSUS):
        state = sensors.psus[psu.number]
        supplies.append(
            {
                "@odata.id": f"{url}#/PowerSupplies/{index}",
                "MemberId": str(index),
                "Name": psu.name,
                "Status": PSU_STATUS[state],
                "PowerSupplyType": "AC",
                "LineInputVoltage": 230 if state in (PsuState.OK, PsuState.FAILED) else None,
                "PowerCapacityWatts": 800,
                "Manufacturer": fru.PSU_MANUFACTURER,
                "Model": fru.PSU_PRODUCT,
                "PartNumber": fru.PSU_PART,
                "SerialNumber": identity.psu_serials[index],
            }
        )
    return {
        "@odata.id": url,
        "@odata.type": "#Power.v1_7_0.Power",
        "Id": "Power",
        "Name": "Power",
        "PowerControl": [
            {
                "@odata.id": f"{url}#/PowerControl/0",
                "MemberId": "0",
                "Name": "System Power Control",
                "PowerConsumedWatts": sensors.value(meter),
                "PowerCapacityWatts": 1600,
                "Status": _status(sensors, meter),
            }
        ],
        "Voltages": [
            {
                **_member(url, "Voltages", index, sensor, sensors),
                "ReadingVolts": sensors.value(sensor),
                "PhysicalContext": "SystemBoard",
            }
            for index, sensor in enumerate(rails)
        ],
        "PowerSupplies": supplies,
    }


def log_service(url: str, sensors: Sensors) -> Resource:
    return {
        "@odata.id": url,
        "@odata.type": "#LogService.v1_1_3.LogService",
        "Id": "SEL",
        "Name": "System Event Log",
        "MaxNumberOfRecords": CAPACITY,
        "OverWritePolicy": "WrapsWhenFull",
        "DateTime": timestamp(sensors.log.wall()),
        "ServiceEnabled": True,
        "LogEntryType": "SEL",
        "Status": {"State": "Enabled", "Health": "OK"},
        "Entries": {"@odata.id": f"{url}/Entries"},
        "Actions": {"#LogService.ClearLog": {"target": f"{url}/Actions/LogService.ClearLog"}},
    }


def entries(url: str, sensors: Sensors) -> Resource:
    """The Entries collection, every entry expanded (as the mockups and most BMCs show it)."""
    members = [
        log_entry(f"{url}/{struct.unpack_from('<H', record)[0]}", record)
        for record in sensors.log.records()
    ]
    return {
        "@odata.id": url,
        "@odata.type": "#LogEntryCollection.LogEntryCollection",
        "Name": "System Event Log Entries",
        "Members": members,
        "Members@odata.count": len(members),
    }


def log_entry(url: str, record: bytes) -> Resource:
    """One SEL record as a LogEntry."""
    record_id, _, at = struct.unpack_from("<HBI", record)
    sensor_type, number, direction = record[10], record[11], record[12]
    data = record[13:16]
    deassertion = bool(direction & DEASSERTION)
    sensor = BY_NUMBER.get(number)
    name = sensor.name if sensor else f"Sensor {number:#04x}"
    offset = data[0] & 0x0F
    if direction & 0x7F == EventType.THRESHOLD and isinstance(sensor, Analog):
        threshold = next(t for t in Threshold if t.event_offset == offset)
        code = _threshold_code(threshold)
        unit = UNITS[sensor.unit]
        message = (
            f"{name}: {code} {'deasserted' if deassertion else 'asserted'}; "
            f"reading {sensor.value(data[1]):g} {unit}, threshold {sensor.value(data[2]):g} {unit}"
        )
        severity = (
            Health.WARNING if threshold in (Threshold.LOWER_NON_CRITICAL,
                                            Threshold.UPPER_NON_CRITICAL) else Health.CRITICAL
        )  # fmt: skip
    else:
        text, severity = DISCRETE_EVENTS.get((sensor_type, offset), ("State", Health.OK))
        code = "Deassert" if deassertion else "Assert"
        message = f"{name}: {text} {'deasserted' if deassertion else 'asserted'}"
    return {
        "@odata.id": url,
        "@odata.type": "#LogEntry.v1_9_0.LogEntry",
        "Id": str(record_id),
        "Name": f"Log Entry {record_id}",
        "EntryType": "SEL",
        "Created": timestamp(at),
        "Severity": str(Health.OK if deassertion else severity),
        "Message": message,
        "SensorType": SENSOR_TYPES.get(sensor_type, "Other Units-based Sensor"),
        "SensorNumber": number,
        "EntryCode": code,
        "EventType": "Alert",
        "GeneratorId": "0x0020",
    }


def _threshold_code(threshold: Threshold) -> str:
    """LogEntryCode of a threshold event, e.g. "Lower Critical - going low"."""
    level = {0: "Non-critical", 1: "Critical", 2: "Non-recoverable"}[threshold % 3]
    return f"{'Upper' if threshold.upper else 'Lower'} {level} - going " + (
        "high" if threshold.upper else "low"
    )
