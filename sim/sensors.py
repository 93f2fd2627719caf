"""The sensors of a simulated server: readings by power state, thresholds, and the events logged.

A small rack server's set: inlet and CPU temperatures, four fans, two power supplies, the 12 V
and 3.3 V rails, the power meter, the power unit and the event log itself. Readings follow
what BMCs on standby power do: when the machine is off, the inlet temperature, the PSUs, the
power unit and the power meter (standby watts) still read, while the CPU temperature, the fans
and the main rails say "reading unavailable" with scanning disabled instead of reading 0, so
an idle machine raises no threshold events. Threshold events a sensor had asserted end
silently when it goes unavailable, and are asserted again if it comes back still past them.
Every machine reads a little differently (a few counts, from its name), the same every run.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from sim.sel import UNSPECIFIED, Event, EventLog, EventType, WallClock


class SensorType(IntEnum):
    """Sensor type codes (IPMI 2.0 table 42-3)."""

    TEMPERATURE = 0x01
    VOLTAGE = 0x02
    FAN = 0x04
    POWER_SUPPLY = 0x08
    POWER_UNIT = 0x09
    OTHER_UNITS = 0x0B
    EVENT_LOGGING = 0x10


class Unit(IntEnum):
    """Sensor base units (IPMI 2.0 table 43-15)."""

    CELSIUS = 1
    VOLTS = 4
    WATTS = 6
    RPM = 18


class Entity(IntEnum):
    """Entity ids of what a sensor watches (IPMI 2.0 table 43-13)."""

    PROCESSOR = 0x03
    SYSTEM_BOARD = 0x07
    POWER_SUPPLY = 0x0A
    POWER_UNIT = 0x15
    FAN = 0x1D
    AIR_INLET = 0x37
    BMC = 0x20


class Threshold(IntEnum):
    """Thresholds by their bit in the comparison status and the threshold masks (§35.14)."""

    LOWER_NON_CRITICAL = 0
    LOWER_CRITICAL = 1
    LOWER_NON_RECOVERABLE = 2
    UPPER_NON_CRITICAL = 3
    UPPER_CRITICAL = 4
    UPPER_NON_RECOVERABLE = 5

    @property
    def upper(self) -> bool:
        return self >= Threshold.UPPER_NON_CRITICAL

    @property
    def event_offset(self) -> int:
        """The assertion offset "going low" for lower, "going high" for upper (table 42-2)."""
        return (0x00, 0x02, 0x04, 0x07, 0x09, 0x0B)[self]


class Health(StrEnum):
    """A sensor's or a machine's health, in Redfish's words."""

    OK = "OK"
    WARNING = "Warning"
    CRITICAL = "Critical"


class PsuState(StrEnum):
    """What the control channel can make of a power supply."""

    OK = "ok"
    FAILED = "failed"
    AC_LOST = "ac_lost"
    ABSENT = "absent"


# Power Supply sensor-specific offsets (table 42-3, type 08h): 0 presence, 1 failure, 3 AC lost
PSU_STATES = {
    PsuState.OK: 0b0001,
    PsuState.FAILED: 0b0011,
    PsuState.AC_LOST: 0b1001,
    PsuState.ABSENT: 0b0000,
}
POWER_OFF = 0  # Power Unit offset 0: "Power Off / Power Down"
LOG_CLEARED = 2  # Event Logging Disabled offset 2: "Log Area Reset/Cleared"
SCANNING, UNAVAILABLE = 0x40, 0x20  # Get Sensor Reading byte 2 (§35.14)


@dataclass(frozen=True)
class Analog:
    """A threshold sensor: value = M * raw * 10^R (B is 0, linear); thresholds in its units."""

    number: int
    name: str
    type: SensorType
    unit: Unit
    entity: Entity
    m: int
    r_exp: int
    nominal: float
    thresholds: Mapping[Threshold, float]
    standby: bool = False  # reads while the machine is off
    off_value: float | None = None  # the standby reading when it differs from `nominal`
    spread: int = 0  # raw counts a machine may read above nominal
    raw_thresholds: dict[Threshold, int] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        raw = {threshold: self.raw(value) for threshold, value in self.thresholds.items()}
        object.__setattr__(self, "raw_thresholds", raw)

    def raw(self, value: float) -> int:
        return max(0, min(255, round(value / (self.m * 10.0**self.r_exp))))

    def value(self, raw: int) -> float:
        return round(self.m * raw * 10.0**self.r_exp, 3)

    def crossed(self, raw: int) -> int:
        """The comparison status bits: lower ones at or below, upper ones at or above."""
        status = 0
        for threshold, limit in self.raw_thresholds.items():
            if (raw >= limit) if threshold.upper else (raw <= limit):
                status |= 1 << threshold
        return status


@dataclass(frozen=True)
class Discrete:
    """A sensor-specific discrete sensor; `states`: the offsets it can report."""

    number: int
    name: str
    type: SensorType
    entity: Entity
    states: int
    instance: int = 1


LNC, LC, UNC, UC, UNR = (
    Threshold.LOWER_NON_CRITICAL,
    Threshold.LOWER_CRITICAL,
    Threshold.UPPER_NON_CRITICAL,
    Threshold.UPPER_CRITICAL,
    Threshold.UPPER_NON_RECOVERABLE,
)
_TEMP, _FAN = SensorType.TEMPERATURE, SensorType.FAN
ANALOG = (
    Analog(0x01, "Inlet Temp", _TEMP, Unit.CELSIUS, Entity.AIR_INLET, 1, 0, 22,
           {LNC: 8, LC: 3, UNC: 38, UC: 42, UNR: 47}, standby=True, spread=3),
    Analog(0x02, "CPU1 Temp", _TEMP, Unit.CELSIUS, Entity.PROCESSOR, 1, 0, 45,
           {UNC: 85, UC: 90, UNR: 95}, spread=6),
    *(
        Analog(0x30 + index, f"Fan{index + 1}", _FAN, Unit.RPM, Entity.FAN, 60, 0, 8400,
               {LNC: 1200, LC: 600}, spread=4)
        for index in range(4)
    ),
    Analog(0x10, "12V", SensorType.VOLTAGE, Unit.VOLTS, Entity.SYSTEM_BOARD, 6, -2, 12.06,
           {LC: 10.8, LNC: 11.4, UNC: 12.6, UC: 13.2}),
    Analog(0x11, "3.3V", SensorType.VOLTAGE, Unit.VOLTS, Entity.SYSTEM_BOARD, 2, -2, 3.32,
           {LC: 2.96, LNC: 3.14, UNC: 3.46, UC: 3.64}, spread=1),
    Analog(0x20, "Power", SensorType.OTHER_UNITS, Unit.WATTS, Entity.POWER_UNIT, 4, 0, 180,
           {UNC: 720, UC: 800}, standby=True, off_value=8, spread=10),
)  # fmt: skip
PSUS = (
    Discrete(0x40, "PSU1", SensorType.POWER_SUPPLY, Entity.POWER_SUPPLY, 0b1011, 1),
    Discrete(0x41, "PSU2", SensorType.POWER_SUPPLY, Entity.POWER_SUPPLY, 0b1011, 2),
)
POWER_UNIT = Discrete(0x50, "Pwr Unit Status", SensorType.POWER_UNIT, Entity.POWER_UNIT, 0b1)
EVENT_LOG = Discrete(0x60, "Event Log", SensorType.EVENT_LOGGING, Entity.BMC, 0b100)
DISCRETE = (*PSUS, POWER_UNIT, EVENT_LOG)
EVERY: tuple[Analog | Discrete, ...] = (*ANALOG, *DISCRETE)
BY_NAME = {sensor.name: sensor for sensor in EVERY}
BY_NUMBER = {sensor.number: sensor for sensor in EVERY}


class Sensors:
    """One machine's sensor state and its BMC's event log; the machine reports power changes."""

    def __init__(self, name: str, wall: WallClock = time.time) -> None:
        seed = zlib.crc32(name.encode())
        self._nominal = {
            s.number: s.raw(s.nominal) + zlib.crc32(f"{name}/{s.name}".encode()) % (s.spread + 1)
            for s in ANALOG
        }
        self._override: dict[int, int] = {}  # raw readings the control channel set
        self.psus = dict.fromkeys((psu.number for psu in PSUS), PsuState.OK)
        self._on = False
        self._active = {sensor.number: 0 for sensor in ANALOG}  # asserted threshold bits
        self.log = EventLog(wall)
        self._seed_log(seed)
        self._rescan()

    @property
    def on(self) -> bool:
        return self._on

    def power_changed(self, on: bool) -> None:
        """The machine came on or went off: the power unit logs it, sensors rescan."""
        if on == self._on:
            return
        self._on = on
        event = Event(POWER_UNIT.type, POWER_UNIT.number, EventType.SENSOR_SPECIFIC,
                      _discrete(POWER_OFF), deassertion=on)  # fmt: skip
        self.log.log(event)
        self._rescan()

    def set_value(self, name: str, value: float | None) -> None:
        """Hold a threshold sensor at `value` in its units (None: back to its own reading)."""
        sensor = self._analog(name)
        if value is None:
            self._override.pop(sensor.number, None)
        else:
            self._override[sensor.number] = sensor.raw(value)
        self._rescan()

    def set_state(self, name: str, state: PsuState) -> None:
        """Make a power supply fail, lose AC, go absent or come back; changes are logged."""
        sensor = BY_NAME.get(name)
        if sensor is None or sensor.number not in self.psus:
            raise KeyError(f"no power supply {name!r}; known: {', '.join(p.name for p in PSUS)}")
        before, after = PSU_STATES[self.psus[sensor.number]], PSU_STATES[state]
        self.psus[sensor.number] = state
        for offset in range(4):
            if (before ^ after) >> offset & 1:
                deassert = not after >> offset & 1
                self.log.log(Event(sensor.type, sensor.number, EventType.SENSOR_SPECIFIC,
                                   _discrete(offset), deassertion=deassert))  # fmt: skip

    def set_input(self, index: int, fed: bool) -> None:
        """AC at power supply `index` lost or back; a failed or absent supply stays so."""
        psu = PSUS[index]
        if self.psus[psu.number] in (PsuState.OK, PsuState.AC_LOST):
            self.set_state(psu.name, PsuState.OK if fed else PsuState.AC_LOST)

    def reset(self) -> None:
        """Every sensor back to its own reading, every power supply working."""
        self._override.clear()
        for psu in PSUS:
            self.set_state(psu.name, PsuState.OK)
        self._rescan()

    def cleared(self) -> None:
        """The log was cleared: its first new entry says so, as BMCs do."""
        self.log.log(Event(SensorType.EVENT_LOGGING, EVENT_LOG.number,
                           EventType.SENSOR_SPECIFIC, _discrete(LOG_CLEARED)))  # fmt: skip

    def raw(self, sensor: Analog) -> int | None:
        """The raw reading, None while unavailable (the machine off, the sensor not standby)."""
        if not (self._on or sensor.standby):
            return None
        override = self._override.get(sensor.number)
        if override is not None:
            return override
        if not self._on and sensor.off_value is not None:
            return sensor.raw(sensor.off_value)
        return self._nominal[sensor.number]

    def value(self, sensor: Analog) -> float | None:
        raw = self.raw(sensor)
        return None if raw is None else sensor.value(raw)

    def states(self, sensor: Discrete) -> int:
        """The asserted offsets of a discrete sensor, as a bit mask."""
        if sensor.number in self.psus:
            return PSU_STATES[self.psus[sensor.number]]
        if sensor is POWER_UNIT:
            return 0 if self._on else 1 << POWER_OFF
        return 0

    def reading(self, number: int) -> bytes | None:
        """Get Sensor Reading's response data (§35.14); None for an unknown sensor."""
        sensor = BY_NUMBER.get(number)
        if sensor is None:
            return None
        if isinstance(sensor, Discrete):
            states = self.states(sensor)
            return bytes([0, 0x80 | SCANNING, states & 0xFF, 0x80 | states >> 8])
        raw = self.raw(sensor)
        if raw is None:
            return bytes([0, UNAVAILABLE, 0, 0x80])
        return bytes([raw, 0x80 | SCANNING, 0xC0 | sensor.crossed(raw), 0x80])

    def health(self, sensor: Analog | Discrete) -> Health:
        if isinstance(sensor, Discrete):
            state = self.psus.get(sensor.number, PsuState.OK)
            return Health.CRITICAL if state in (PsuState.FAILED, PsuState.AC_LOST) else Health.OK
        raw = self.raw(sensor)
        status = 0 if raw is None else sensor.crossed(raw)
        if status & ~(1 << LNC | 1 << UNC):
            return Health.CRITICAL
        return Health.WARNING if status else Health.OK

    def overall(self) -> Health:
        """The worst health of any sensor: what a BMC's rollup shows."""
        seen = {self.health(sensor) for sensor in EVERY}
        return next(
            (health for health in (Health.CRITICAL, Health.WARNING) if health in seen), Health.OK
        )

    def snapshot(self) -> dict[str, Any]:
        """Readings (None: unavailable), states and health by sensor name, as JSON-ready data."""
        sensors: dict[str, Any] = {
            sensor.name: {"value": self.value(sensor), "health": str(self.health(sensor))}
            for sensor in ANALOG
        }
        for psu in PSUS:
            sensors[psu.name] = {
                "state": str(self.psus[psu.number]),
                "health": str(self.health(psu)),
            }
        return {"health": str(self.overall()), "sensors": sensors, "sel_entries": len(self.log)}

    def _analog(self, name: str) -> Analog:
        sensor = BY_NAME.get(name)
        if not isinstance(sensor, Analog):
            known = ", ".join(s.name for s in ANALOG)
            raise KeyError(f"no threshold sensor {name!r}; known: {known}")
        return sensor

    def _rescan(self) -> None:
        """Log the threshold events that began or ended since the last scan."""
        for sensor in ANALOG:
            raw = self.raw(sensor)
            now = 0 if raw is None else sensor.crossed(raw)
            before = self._active[sensor.number]
            self._active[sensor.number] = now
            if raw is None:
                continue  # unavailable: what was asserted ends without an entry
            for threshold in sorted(sensor.raw_thresholds):
                bit = 1 << threshold
                if (now ^ before) & bit:
                    self._log_threshold(sensor, threshold, raw, deassertion=not now & bit)

    def _log_threshold(
        self, sensor: Analog, threshold: Threshold, raw: int, *, deassertion: bool
    ) -> None:
        # event data 1: 01b trigger reading in byte 2, 01b trigger threshold in byte 3
        data = bytes([0x50 | threshold.event_offset, raw, sensor.raw_thresholds[threshold]])
        self.log.log(Event(sensor.type, sensor.number, EventType.THRESHOLD, data, deassertion))

    def _seed_log(self, seed: int) -> None:
        """What a BMC that has run for a while shows: a cleared log, a PSU that lost AC once."""
        now = self.log.wall()
        start = now - 3 * 86400 - seed % 3600
        psu = PSUS[1]
        self.log.log(Event(EVENT_LOG.type, EVENT_LOG.number, EventType.SENSOR_SPECIFIC,
                           _discrete(LOG_CLEARED)), start)  # fmt: skip
        for offset, at, deassertion in ((3, 7200, False), (3, 7500, True)):
            event = Event(psu.type, psu.number, EventType.SENSOR_SPECIFIC, _discrete(offset),
                          deassertion)  # fmt: skip
            self.log.log(event, start + at)
        inlet = ANALOG[0]
        for deassertion, at in ((False, 86400), (True, 87000)):
            raw = inlet.raw_thresholds[UNC] + (-1 if deassertion else 1)
            data = bytes([0x50 | UNC.event_offset, raw, inlet.raw_thresholds[UNC]])
            event = Event(inlet.type, inlet.number, EventType.THRESHOLD, data, deassertion)
            self.log.log(event, start + at)
        self.log.added_at = int(start + 87000)
        self.log.erased_at = int(start)


def _discrete(offset: int) -> bytes:
    return bytes([offset, UNSPECIFIED, UNSPECIFIED])


def pack_thresholds(sensor: Analog) -> bytes:
    """Get Sensor Thresholds' response (§35.9): readable mask, then LNC LC LNR UNC UC UNR."""
    mask = sum(1 << threshold for threshold in sensor.raw_thresholds)
    return bytes([mask]) + struct.pack(
        "6B", *(sensor.raw_thresholds.get(Threshold(bit), 0) for bit in range(6))
    )
