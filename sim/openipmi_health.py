"""What an `ipmi_sim` health BMC holds: sensors with their SDRs, a System Event Log, FRU 0 and
a power supply's FRU 1 (found through a FRU device locator SDR).

`openipmi_fleet(..., health=True)` starts BMCs configured from these constants, so a test
compares what a client reads with `SENSORS`, `SEL_EVENTS`, `FRU` and `PSU1_FRU`. The SDRs are
written in OpenIPMI's own SDR language and compiled by its `sdrcomp` (Debian's `openipmi` ships
it), so the record bytes come from someone else's reading of the spec, as the BMC does. Every
reading is one raw byte: `ThresholdSensor.raw` says which.

ipmi_sim quirks this relies on: a sensor added after its SDR takes its thresholds and event
masks from the SDR (`sensor_threshold_access settable` and `init_thresholds`); its status bits
start clear until a value is set; SEL timestamps are seconds since the machine booted (shown
as "PostInit" / "Pre-Init") until a client sets the SEL time; sdrcomp packs a name without a
lower-case letter into 6-bit ASCII (or BCD+ if all digits), so names here keep one.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path

from sim.fru import Board, Chassis, Fru, Product

BMC_ADDRESS = 0x20
_LUN = 0
_SEL_CAPACITY = 200
# Get SEL Info's operation support byte: Delete SEL and Reserve SEL supported.
_SEL_OPERATIONS = 0x0A
_SYSTEM_EVENT = 0x02
_EVENT_MESSAGE_REVISION = 0x04
_THRESHOLD_READING_TYPE = 0x01
_SENSOR_SPECIFIC_READING_TYPE = 0x6F
# Event data 1 of a threshold event: byte 2 holds the reading, byte 3 the threshold.
_READING_AND_THRESHOLD = 0x50


class SensorType(StrEnum):
    """IPMI sensor types (table 42-3), spelled as FreeIPMI prints them."""

    TEMPERATURE = "Temperature"
    VOLTAGE = "Voltage"
    FAN = "Fan"
    POWER_SUPPLY = "Power Supply"
    POWER_UNIT = "Power Unit"

    @property
    def code(self) -> int:
        return _SENSOR_TYPE_CODES[self]


_SENSOR_TYPE_CODES = {
    SensorType.TEMPERATURE: 0x01,
    SensorType.VOLTAGE: 0x02,
    SensorType.FAN: 0x04,
    SensorType.POWER_SUPPLY: 0x08,
    SensorType.POWER_UNIT: 0x09,
}


class Unit(StrEnum):
    """Base units (table 43-15), spelled as FreeIPMI's `--non-abbreviated-units` prints them."""

    DEGREES_C = "degrees C"
    VOLTS = "Volts"
    RPM = "RPM"

    @property
    def code(self) -> int:
        return _UNIT_CODES[self]


_UNIT_CODES = {Unit.DEGREES_C: 1, Unit.VOLTS: 4, Unit.RPM: 18}


class Entity(IntEnum):
    """Entity IDs (table 43-13) of what a sensor watches."""

    PROCESSOR = 3
    SYSTEM_BOARD = 7
    POWER_SUPPLY = 10
    POWER_UNIT = 19
    FAN = 29


class Threshold(StrEnum):
    """The six thresholds, in IPMI's order (bit 0 of every threshold mask first)."""

    LOWER_NON_CRITICAL = "lnc"
    LOWER_CRITICAL = "lc"
    LOWER_NON_RECOVERABLE = "lnr"
    UPPER_NON_CRITICAL = "unc"
    UPPER_CRITICAL = "uc"
    UPPER_NON_RECOVERABLE = "unr"

    @property
    def is_upper(self) -> bool:
        return self.value.startswith("u")

    def event_offset(self) -> int:
        """The generic threshold event offset (table 42-2) for crossing it the bad way."""
        index = list(Threshold).index(self)
        return index * 2 + 1 if self.is_upper else index * 2


@dataclass(frozen=True)
class ThresholdSensor:
    """An analog sensor: reading = m * raw * 10**r_exp, thresholds in the same units."""

    number: int
    name: str
    type: SensorType
    unit: Unit
    entity: Entity
    instance: int
    reading: float
    thresholds: Mapping[Threshold, float]
    m: int = 1
    r_exp: int = 0

    def raw(self, value: float) -> int:
        """The byte the BMC stores for `value` (which must be a multiple of the resolution)."""
        resolution = self.m * 10.0**self.r_exp
        raw = round(value / resolution)
        if not 0 <= raw <= 255 or abs(raw * resolution - value) > 1e-9:
            raise ValueError(f"{self.name}: {value} is no reading of this sensor")
        return raw

    def sdr(self) -> str:
        lines = [
            *_sensor_head(self.number, self.entity, self.instance),
            "init_thresholds true",
            "sensor_threshold_access settable",
            f"sensor_type {self.type.code}",
            f"event_reading_type_code {_THRESHOLD_READING_TYPE}",
        ]
        for threshold, value in self.thresholds.items():
            going = "gh" if threshold.is_upper else "gl"
            lines += [
                f"assert_{threshold}{going} true",
                f"deassert_{threshold}{going} true",
                f"return_{threshold} true",
                f"{threshold}_thrsh_readable true",
                f"{threshold}_thresh {self.raw(value)}",
            ]
        lines += [
            "analog_data_format unsigned",
            f"base_unit {self.unit.code}",
            "linearization linear",
            f"m {self.m}",
            f"r_exp {self.r_exp}",
            "sensor_direction input",
            "sensor_minimum 0",
            "sensor_maximum 255",
        ]
        return _sdr(1, lines, self.name)


@dataclass(frozen=True)
class DiscreteSensor:
    """A sensor-specific discrete sensor: a set of asserted state offsets (table 42-3), each
    named as FreeIPMI names it.
    """

    number: int
    name: str
    type: SensorType
    entity: Entity
    instance: int
    offsets: dict[int, str]
    asserted: frozenset[int] = field(default_factory=frozenset)

    def sdr(self) -> str:
        lines = [
            *_sensor_head(self.number, self.entity, self.instance),
            f"sensor_type {self.type.code}",
            f"event_reading_type_code {_SENSOR_SPECIFIC_READING_TYPE}",
        ]
        for offset in self.offsets:
            lines += [
                f"assert_event{offset} true",
                f"deassert_event{offset} true",
                f"event{offset}_state_ret true",
            ]
        return _sdr(2, lines, self.name)


Sensor = ThresholdSensor | DiscreteSensor


@dataclass(frozen=True)
class SelEvent:
    """A system event record: `offset` of `sensor` asserted or deasserted.

    A threshold event carries the reading that crossed and the threshold crossed.
    """

    sensor: Sensor
    offset: int
    asserted: bool = True
    reading: float | None = None
    threshold: float | None = None

    def command(self) -> str:
        """ipmi_sim's `sel_add`; its first 4 data bytes (the timestamp) are ignored."""
        if isinstance(self.sensor, ThresholdSensor):
            if self.reading is None or self.threshold is None:
                raise ValueError("a threshold event needs the reading and the threshold")
            reading_type = _THRESHOLD_READING_TYPE
            data = [
                _READING_AND_THRESHOLD | self.offset,
                self.sensor.raw(self.reading),
                self.sensor.raw(self.threshold),
            ]
        else:
            reading_type = _SENSOR_SPECIFIC_READING_TYPE
            data = [self.offset, 0xFF, 0xFF]
        direction = 0 if self.asserted else 0x80
        record = [
            *(0, 0, 0, 0),
            *(BMC_ADDRESS, 0),  # generator: the BMC, channel 0 LUN 0
            _EVENT_MESSAGE_REVISION,
            self.sensor.type.code,
            self.sensor.number,
            direction | reading_type,
            *data,
        ]
        return f"sel_add {BMC_ADDRESS:#04x} {_SYSTEM_EVENT:#04x} " + _hex(record)


def _sensor_head(number: int, entity: Entity, instance: int) -> list[str]:
    return [
        f"sensor_owner_id {BMC_ADDRESS:#04x}",
        f"sensor_owner_lun {_LUN}",
        "channel_number 0",
        f"sensor_number {number}",
        f"entity_id {entity.value}",
        f"entity_instance {instance}",
        "init_scanning true",
        "init_events true",
        "init_sensor_type true",
        "default_event_gen_on true",
        "default_sensor_scan_on true",
        "sensor_auto_rearm true",
        "sensor_event_msg_ctrl per_state",
    ]


def _sdr(kind: int, lines: list[str], name: str) -> str:
    if name == name.upper():
        raise ValueError(f"sdrcomp would pack {name!r} into 6-bit ASCII: give it a lower-case")
    body = "".join(f"\t{line}\n" for line in [*lines, f'id_string "{name}"'])
    return f"sdr type {kind}\n{body}endsdr\n"


def _hex(data: list[int] | bytes) -> str:
    return " ".join(f"{byte:#04x}" for byte in data)


CPU_TEMP = ThresholdSensor(
    1, "CPU Temp", SensorType.TEMPERATURE, Unit.DEGREES_C, Entity.PROCESSOR, 1, 45,
    {Threshold.UPPER_NON_CRITICAL: 80, Threshold.UPPER_CRITICAL: 90,
     Threshold.UPPER_NON_RECOVERABLE: 100},
)  # fmt: skip
INLET_TEMP = ThresholdSensor(
    2, "Inlet Temp", SensorType.TEMPERATURE, Unit.DEGREES_C, Entity.SYSTEM_BOARD, 1, 24,
    {Threshold.LOWER_CRITICAL: 5, Threshold.LOWER_NON_CRITICAL: 10,
     Threshold.UPPER_NON_CRITICAL: 35, Threshold.UPPER_CRITICAL: 40},
)  # fmt: skip
_FAN_THRESHOLDS = {
    Threshold.LOWER_NON_RECOVERABLE: 250,
    Threshold.LOWER_CRITICAL: 500,
    Threshold.LOWER_NON_CRITICAL: 1000,
}
FAN_1 = ThresholdSensor(
    3, "Fan 1", SensorType.FAN, Unit.RPM, Entity.FAN, 1, 4800, _FAN_THRESHOLDS, m=50
)
FAN_2 = ThresholdSensor(
    4, "Fan 2", SensorType.FAN, Unit.RPM, Entity.FAN, 2, 5100, _FAN_THRESHOLDS, m=50
)
RAIL_12V = ThresholdSensor(
    5, "12V Rail", SensorType.VOLTAGE, Unit.VOLTS, Entity.SYSTEM_BOARD, 1, 12.1,
    {Threshold.LOWER_CRITICAL: 10.8, Threshold.LOWER_NON_CRITICAL: 11.4,
     Threshold.UPPER_NON_CRITICAL: 12.6, Threshold.UPPER_CRITICAL: 13.2},
    r_exp=-1,
)  # fmt: skip
PSU_OFFSETS = {
    0: "Presence detected",
    1: "Power Supply Failure detected",
    2: "Predictive Failure",
    3: "Power Supply input lost (AC/DC)",
}
PSU_PRESENT, PSU_FAILURE = 0, 1
PSU_1 = DiscreteSensor(
    6, "PSU1 Status", SensorType.POWER_SUPPLY, Entity.POWER_SUPPLY, 1, PSU_OFFSETS,
    frozenset({PSU_PRESENT}),
)  # fmt: skip
PSU_2 = DiscreteSensor(
    7, "PSU2 Status", SensorType.POWER_SUPPLY, Entity.POWER_SUPPLY, 2, PSU_OFFSETS,
    frozenset({PSU_PRESENT}),
)  # fmt: skip
POWER_OFF, AC_LOST = 0, 4
POWER_UNIT = DiscreteSensor(
    8, "Power Unit", SensorType.POWER_UNIT, Entity.POWER_UNIT, 1,
    {POWER_OFF: "Power Off/Power Down", 1: "Power Cycle", AC_LOST: "AC lost/Power input lost",
     6: "Power Unit Failure detected"},
)  # fmt: skip

SENSORS: tuple[Sensor, ...] = (
    CPU_TEMP,
    INLET_TEMP,
    FAN_1,
    FAN_2,
    RAIL_12V,
    PSU_1,
    PSU_2,
    POWER_UNIT,
)

# In the log at start, oldest first (record IDs 1, 2, ...): an inlet too warm for a while, a
# power supply that failed and came back, and a power loss with the power back.
SEL_EVENTS: tuple[SelEvent, ...] = (
    SelEvent(INLET_TEMP, Threshold.UPPER_NON_CRITICAL.event_offset(), True, 36, 35),
    SelEvent(INLET_TEMP, Threshold.UPPER_NON_CRITICAL.event_offset(), False, 33, 35),
    SelEvent(PSU_2, PSU_FAILURE, True),
    SelEvent(PSU_2, PSU_FAILURE, False),
    SelEvent(POWER_UNIT, AC_LOST, True),
    SelEvent(POWER_UNIT, POWER_OFF, True),
    SelEvent(POWER_UNIT, POWER_OFF, False),
)

FRU = Fru(
    Chassis(type=0x17, part_number="CH-2U-0042", serial_number="CHS1234567"),
    Board(
        manufactured_at=datetime(2024, 3, 14, 9, 26, tzinfo=UTC),
        manufacturer="Rackhand Labs",
        product_name="RH-Board X1",
        serial_number="BRD7654321",
        part_number="PB-100-01",
    ),
    Product(
        manufacturer="Rackhand Labs",
        product_name="RH-Server 2U",
        part_number="RH2U-A",
        version="1.2",
        serial_number="SRV0001234",
        asset_tag="ASSET-0042",
    ),
)

PSU1_FRU_ID = 1
PSU1_FRU_NAME = "Power Supply 1"  # with a lower-case letter: see above
PSU1_FRU = Fru(
    board=Board(
        manufactured_at=datetime(2023, 11, 2, 16, 40, tzinfo=UTC),
        manufacturer="PowerCo",
        product_name="PWS-800W",
        serial_number="PSU0009876",
        part_number="PWS-800-A",
    ),
    product=Product(
        manufacturer="PowerCo",
        product_name="800W Platinum PSU",
        part_number="PWS-800-A",
        version="B2",
        serial_number="PSU0009876",
        asset_tag="",
    ),
)
# A logical FRU device of the BMC (FRU device locator, table 43-7): how a client finds FRU 1.
_PSU1_FRU_LOCATOR_SDR = f"""sdr type 17
	device_access_address 0x20
	fru_device_address {PSU1_FRU_ID}
	logical_fru true
	lun 0
	channel_number 0
	device_type 0x10
	device_type_modifier 0
	fru_entity_id {Entity.POWER_SUPPLY.value}
	fru_entity_instance 1
	id_string "{PSU1_FRU_NAME}"
endsdr
"""

_CONTROLLER_SDR = """sdr type 18
	device_slave_address 0x20
	device_channel_number 0
	chassis true
	ipmb_event_recv true
	fru_inventory true
	sel true
	sdr true
	sensor true
	entity_id 7
	entity_instance 1
	id_string "ipmi_sim BMC"
endsdr
"""


def emulation() -> str:
    """The emulator commands that fill an added (not yet enabled) BMC: SEL, SDRs, sensors,
    their readings at start, the SEL's records and FRU 0, in the order ipmi_sim needs.
    """
    addr = f"{BMC_ADDRESS:#04x}"
    lines = [f"sel_enable {addr} {_SEL_CAPACITY} {_SEL_OPERATIONS:#04x}"]
    lines += [f"main_sdr_add {addr} {_hex(record)}" for record in compiled_sdrs()]
    for sensor in SENSORS:
        reading_type = (
            _THRESHOLD_READING_TYPE
            if isinstance(sensor, ThresholdSensor)
            else _SENSOR_SPECIFIC_READING_TYPE
        )
        lines.append(
            f"sensor_add {addr} {_LUN} {sensor.number} {sensor.type.code:#04x} {reading_type:#04x}"
        )
        if isinstance(sensor, ThresholdSensor):
            lines.append(set_reading_command(sensor, sensor.reading, event=False))
        else:
            lines += [set_state_command(sensor, o, True, event=False) for o in sensor.asserted]
    lines += [event.command() for event in SEL_EVENTS]
    for fru_id, fru in ((0, FRU), (PSU1_FRU_ID, PSU1_FRU)):
        data = fru.encode()
        lines.append(f"mc_add_fru_data {addr} {fru_id} {len(data)} data {_hex(data)}")
    return "".join(f"{line}\n" for line in lines)


def set_reading_command(sensor: ThresholdSensor, value: float, *, event: bool) -> str:
    """`sensor_set_value`: ipmi_sim then sets the threshold status bits and, with `event`,
    logs an event for each threshold newly crossed (or recrossed back).
    """
    return (
        f"sensor_set_value {BMC_ADDRESS:#04x} {_LUN} {sensor.number} "
        f"{sensor.raw(value)} {int(event)}"
    )


def set_state_command(sensor: DiscreteSensor, offset: int, asserted: bool, *, event: bool) -> str:
    """`sensor_set_bit`: one state offset on or off, logged when it changes with `event`."""
    if offset not in sensor.offsets:
        raise ValueError(f"{sensor.name} has no state offset {offset}")
    return (
        f"sensor_set_bit {BMC_ADDRESS:#04x} {_LUN} {sensor.number} {offset} "
        f"{int(asserted)} {int(event)}"
    )


def compiled_sdrs() -> list[bytes]:
    """The SDR records (the controller, the sensors, FRU 1's locator), as `sdrcomp -r`
    encodes them.
    """
    sensors = "".join(sensor.sdr() for sensor in SENSORS)
    source = _CONTROLLER_SDR + sensors + _PSU1_FRU_LOCATOR_SDR
    with tempfile.TemporaryDirectory(prefix="sdrcomp-") as folder:
        path = Path(folder) / "health.sdrs"
        path.write_text(source)
        raw = subprocess.run(["sdrcomp", "-r", str(path)], capture_output=True, check=True).stdout
    records: list[bytes] = []
    while raw:
        length = 5 + raw[4]  # the header's 5 bytes, then as many as its last byte says
        records.append(raw[:length])
        raw = raw[length:]
    return records
