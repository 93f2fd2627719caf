"""The Sensor Data Record repository every simulated BMC serves (IPMI 2.0 §33, §43).

Full records for the threshold sensors, compact ones for the discrete sensors and one FRU
device locator for the power supply's FRU. The records are the same on every machine and
built once, so the repository's timestamps are fixed too (clients cache SDRs by them).
"""

from __future__ import annotations

import struct
from functools import cache

from sim.sel import EventType
from sim.sensors import ANALOG, DISCRETE, Analog, Discrete, Entity, Threshold

SDR_VERSION = 0x51
OWNER = 0x20  # the BMC owns every sensor, on LUN 0
FULL, COMPACT, FRU_LOCATOR = 0x01, 0x02, 0x11
MAX_READ = 0x30  # record bytes one Get SDR answers: longer reads get 0xCA, as on many BMCs
ENTIRE = 0xFF
LAST = 0xFFFF
FREE_SPACE = 0x0800  # bytes; nothing is ever added, but a full repository looks broken
ADDED_AT = 1_735_689_600  # 2025-01-01: the repository's "most recent addition"
PSU_FRU = 1  # the FRU device id of the locator record
PSU_FRU_NAME = "PSU1 FRU"
INIT = 0x67  # init scanning, events, sensor type; event generation and scanning enabled


def _name(name: str) -> bytes:
    return bytes([0xC0 | len(name)]) + name.encode()  # 8-bit ASCII + Latin-1


def _header(record_id: int, kind: int, body: bytes) -> bytes:
    return struct.pack("<HBBB", record_id, SDR_VERSION, kind, len(body)) + body


def full_record(record_id: int, sensor: Analog) -> bytes:
    """A Full Sensor Record (§43.1): linear, B = 0, thresholds readable, none settable."""
    readable = sum(1 << threshold for threshold in sensor.raw_thresholds)
    events = sum(1 << threshold.event_offset for threshold in sensor.raw_thresholds)
    lower = sum(1 << threshold for threshold in sensor.raw_thresholds if not threshold.upper)
    upper = sum(1 << (threshold - 3) for threshold in sensor.raw_thresholds if threshold.upper)
    thresholds = [sensor.raw_thresholds.get(Threshold(bit), 0) for bit in (5, 4, 3, 2, 1, 0)]
    nominal = sensor.raw(sensor.nominal)
    body = bytes([OWNER, 0, sensor.number, sensor.entity, 1, INIT, 0x44, sensor.type])
    body += bytes([EventType.THRESHOLD])
    body += struct.pack("<HHBB", events | lower << 12, events | upper << 12, readable, 0)
    body += bytes([0, sensor.unit, 0, 0])  # unsigned, no rate or modifier unit; linear
    body += bytes([sensor.m & 0xFF, (sensor.m >> 8) << 6, 0, 0, 0])  # M; B 0, tolerance, acc.
    body += bytes([(sensor.r_exp & 0x0F) << 4, 0x01, nominal, 0, 0, 0xFF, 0x00])
    body += bytes(thresholds) + bytes([0, 0, 0, 0, 0]) + _name(sensor.name)
    return _header(record_id, FULL, body)


def compact_record(record_id: int, sensor: Discrete) -> bytes:
    """A Compact Sensor Record (§43.2) for a sensor-specific discrete sensor."""
    body = bytes([OWNER, 0, sensor.number, sensor.entity, sensor.instance, INIT, 0x40])
    body += bytes([sensor.type, EventType.SENSOR_SPECIFIC])
    body += struct.pack("<HHH", sensor.states, sensor.states, sensor.states)
    body += bytes([0xC0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + _name(sensor.name)  # no units
    return _header(record_id, COMPACT, body)


def fru_locator(record_id: int) -> bytes:
    """A FRU Device Locator (§43.8) for the logical FRU device of the power supply."""
    body = bytes([OWNER, PSU_FRU, 0x80, 0, 0, 0x10, 0, Entity.POWER_SUPPLY, 1, 0])
    return _header(record_id, FRU_LOCATOR, body + _name(PSU_FRU_NAME))


@cache
def repository() -> tuple[bytes, ...]:
    """Every record, in record id order from 1."""
    records = [full_record(index, sensor) for index, sensor in enumerate(ANALOG, 1)]
    for sensor in DISCRETE:
        records.append(compact_record(len(records) + 1, sensor))
    records.append(fru_locator(len(records) + 1))
    return tuple(records)


def info() -> bytes:
    """Get SDR Repository Info's response (§33.9); operations: reserve supported."""
    count = len(repository())
    return (
        bytes([SDR_VERSION])
        + struct.pack("<HHII", count, FREE_SPACE, ADDED_AT, ADDED_AT)
        + bytes([0x02])
    )


def record(record_id: int) -> tuple[int, bytes] | None:
    """(next record id, record) for an id (0: the first); None when there is none."""
    records = repository()
    index = max(record_id, 1) - 1
    if index >= len(records):
        return None
    return (index + 2 if index + 1 < len(records) else LAST), records[index]
