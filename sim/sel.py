"""A BMC's System Event Log: 16-byte records, reservations, clearing (IPMI 2.0 §31, §32)."""

from __future__ import annotations

import bisect
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

SEL_VERSION = 0x51
CAPACITY = 1024  # records; the oldest goes when full, as on BMCs with a circular SEL
RECORD_SIZE = 16
SYSTEM_EVENT = 0x02  # record type (§32.1)
GENERATOR = 0x20  # the BMC's own slave address: the BMC generated the event
EVM_REVISION = 0x04  # IPMI 1.5 and later event messages
FIRST, LAST = 0x0000, 0xFFFF
DEASSERTION = 0x80  # event dir bit of byte 13
UNSPECIFIED = 0xFF  # event data 2 and 3 that say nothing

WallClock = Callable[[], float]


class EventType(IntEnum):
    """Event/reading type codes (IPMI 2.0 table 42-1, 42-2)."""

    THRESHOLD = 0x01
    SENSOR_SPECIFIC = 0x6F


@dataclass(frozen=True, slots=True)
class Event:
    """What a sensor reports: its type and number, the event type, offset and data 2 and 3."""

    sensor_type: int
    sensor_number: int
    event_type: EventType
    data: bytes  # event data 1..3
    deassertion: bool = False


class EventLog:
    """The records of one BMC, oldest first; record ids only grow (the next is never reused)."""

    def __init__(self, wall: WallClock = time.time) -> None:
        self.wall = wall
        self._ids: list[int] = []
        self._records: dict[int, bytes] = {}
        self._next_id = 1
        self.reservation = 0  # 0: none outstanding
        self._reservations = 0
        self.added_at = 0
        self.erased_at = 0

    def __len__(self) -> int:
        return len(self._ids)

    def log(self, event: Event, at: float | None = None) -> int:
        """Record a system event at `at` (default now); its record id."""
        direction = DEASSERTION if event.deassertion else 0
        body = (
            bytes([SYSTEM_EVENT])
            + struct.pack("<I", int(self.wall() if at is None else at))
            + bytes([GENERATOR, 0, EVM_REVISION, event.sensor_type, event.sensor_number])
            + bytes([direction | event.event_type])
            + event.data
        )
        return self.add(body)

    def add(self, body: bytes) -> int:
        """Store a record without its id (14 bytes, as Add SEL Entry gives); its new id."""
        record_id = self._next_id
        self._next_id = self._next_id % 0xFFFE + 1  # 0000h and FFFFh are never record ids
        if len(self._ids) >= CAPACITY:
            del self._records[self._ids.pop(0)]
        if record_id in self._records:
            self._ids.remove(record_id)
        self._ids.append(record_id)
        self._records[record_id] = struct.pack("<H", record_id) + body
        self.added_at = int(self.wall())
        self.reservation = 0  # an added entry cancels the reservation (§31.4)
        return record_id

    def entry(self, record_id: int) -> tuple[int, bytes] | None:
        """(next record id, record) for an id, FIRST or LAST; None when there is no such one."""
        if not self._ids:
            return None
        if record_id == FIRST:
            record_id = self._ids[0]
        elif record_id == LAST:
            record_id = self._ids[-1]
        record = self._records.get(record_id)
        if record is None:
            return None
        index = bisect.bisect_left(self._ids, record_id)
        if index >= len(self._ids) or self._ids[index] != record_id:  # ids wrapped around
            index = self._ids.index(record_id)
        following = self._ids[index + 1] if index + 1 < len(self._ids) else LAST
        return following, record

    def records(self) -> list[bytes]:
        """Every record, oldest first."""
        return [self._records[record_id] for record_id in self._ids]

    def reserve(self) -> int:
        """A new reservation id; the one before is cancelled."""
        self._reservations = self._reservations % 0xFFFF + 1
        self.reservation = self._reservations
        return self.reservation

    def clear(self) -> None:
        self._ids.clear()
        self._records.clear()
        self.reservation = 0
        self.erased_at = int(self.wall())

    def info(self) -> bytes:
        """Get SEL Info's response data (§31.2); operations: reserve supported."""
        free = (CAPACITY - len(self._ids)) * RECORD_SIZE
        return (
            bytes([SEL_VERSION])
            + struct.pack("<HHII", len(self._ids), min(free, 0xFFFE), self.added_at, self.erased_at)
            + bytes([0x02])
        )
