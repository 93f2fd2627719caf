"""pyghmi's readers of sensor records, readings, event log entries and FRU data, without I/O.

pyghmi's `get_sensor_data`, `get_event_log` and `get_inventory` fetch and decode in one
blocking call. Rackhand fetches on the IPMI reactor (`ipmi_health.py`) and hands the bytes
here, to the same decoders those calls use, so what a byte means is pyghmi's reading of the
spec. Like `pyghmi_shim.py`, written against pyghmi 1.6.19: `check()` refuses a decoder whose
signature changed (`_SHAPES`), and the SEL decoder is a private method (`_sel_decode`).
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import re
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyghmi import constants as _health  # type: ignore[import-untyped]
from pyghmi.ipmi import events as _events  # type: ignore[import-untyped]
from pyghmi.ipmi import fru as _fru
from pyghmi.ipmi import sdr as _sdr
from pyghmi.ipmi.oem import generic as _generic  # type: ignore[import-untyped]
from pyghmi.ipmi.private import constants as _constants  # type: ignore[import-untyped]

from agents.protocol import (
    Fru,
    FruArea,
    Health,
    LogEvent,
    Sensor,
    SensorState,
    Thresholds,
)

_SHAPES = {
    "SDREntry.__init__": (
        "(self, entrybytes, event_consts, reportunsupported=False, mfg_id=0, prod_id=0)"
    ),
    "SDREntry.decode_sensor_reading": "(self, ipmicmd, reading)",
    "SDREntry.decode_value": "(self, ipmicmd, value)",
    "EventHandler.__init__": "(self, sdr, ipmicmd)",
    "EventHandler._sel_decode": "(self, origselentry)",
    "FRU.__init__": "(self, rawdata=None, ipmicmd=None, fruid=0, sdr=None)",
}
_CLASSES = {"SDREntry": _sdr.SDREntry, "EventHandler": _events.EventHandler, "FRU": _fru.FRU}


def check() -> None:
    """Refuse a pyghmi whose decoders changed shape (run once, where the shim is applied)."""
    for name, shape in _SHAPES.items():
        owner, _, method = name.partition(".")
        found = str(inspect.signature(getattr(_CLASSES[owner], method)))
        if found != shape:
            raise RuntimeError(f"pyghmi's {name} is now {found}, not {shape}: re-read it")


log = logging.getLogger(__name__)

SDR_VERSION = 0x51  # the only SDR version IPMI defines (1.5 and 2.0)
BMC_ADDRESS = 0x20  # the owner of the sensors the BMC itself answers for
_FULL_RECORD = 0x01
# Where each record type keeps its ID string's type/length byte (tables 43-1, 43-2, 43-3, 43-7).
_NAME_AT = {0x01: 47, 0x02: 31, 0x03: 16, 0x11: 15}
_SIX_BIT = 2  # "6-bit packed ASCII": pyghmi's decoder of it never ends (it does not consume)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NON_LINEAR = 11  # linearization codes above this need the BMC's factors for each reading


@dataclass(frozen=True, eq=False)
class SensorRecord:
    """One sensor's SDR record as pyghmi read it, with the thresholds the record carries."""

    entry: Any  # pyghmi SDREntry
    thresholds: Thresholds | None

    @property
    def number(self) -> int:
        return int(self.entry.sensor_number)

    @property
    def owner(self) -> int:
        return int(self.entry.sensor_owner)

    @property
    def lun(self) -> int:
        return int(self.entry.sensor_lun)

    @property
    def name(self) -> str:
        return str(self.entry.sensor_name)

    @property
    def readable(self) -> bool:
        return bool(self.entry.readable)

    @property
    def needs_factors(self) -> bool:
        """Non-linear: each reading's conversion factors come from the BMC (Get Sensor
        Reading Factors)."""
        linearization = self.entry.linearization
        return linearization is not None and linearization > _NON_LINEAR


@dataclass(frozen=True, eq=False)
class FruLocator:
    """A FRU device locator record: which FRU ids beyond 0 the BMC serves, and their names."""

    entry: Any  # pyghmi SDREntry

    @property
    def id(self) -> int:
        return int(self.entry.fru_number)

    @property
    def name(self) -> str:
        return str(self.entry.fru_name)


@dataclass(frozen=True)
class Repository:
    """A BMC's sensor data records, read once and kept while its repository is unchanged."""

    sensors: tuple[SensorRecord, ...]
    frus: tuple[FruLocator, ...]

    def names(self) -> dict[str, Any]:
        """Sensor entries by pyghmi's id ("owner.number.lun"), as its event decoder looks up."""
        return {
            f"{record.entry.sensor_owner}.{record.number}.{record.lun}": record.entry
            for record in self.sensors
        }


def repository(records: list[bytes], manufacturer: int, product: int) -> Repository:
    """The records pyghmi can read (version 51h; others skipped, as pyghmi does); a sensor id
    that appears twice is dropped, as pyghmi drops it: neither record can be trusted."""
    sensors: dict[tuple[int, int, int], SensorRecord | None] = {}
    frus: dict[int, FruLocator | None] = {}
    for record in records:
        raw = _eight_bit_name(record)
        try:
            entry = _sdr.SDREntry(bytearray(raw), _constants, False, manufacturer, product)
        except (NotImplementedError, IndexError, KeyError, ValueError, struct.error):
            continue
        for name in ("sensor_name", "fru_name"):
            if isinstance(getattr(entry, name, None), str):
                setattr(entry, name, clean(getattr(entry, name)))
        if entry.sdrtype == _sdr.TYPE_SENSOR:
            key = (entry.sensor_owner, entry.sensor_number, entry.sensor_lun)
            sensors[key] = None if key in sensors else SensorRecord(entry, _thresholds(entry, raw))
        elif entry.sdrtype == _sdr.TYPE_FRU:
            frus[entry.fru_number] = None if entry.fru_number in frus else FruLocator(entry)
    return Repository(
        tuple(record for record in sensors.values() if record is not None),
        tuple(locator for locator in frus.values() if locator is not None),
    )


def _eight_bit_name(raw: bytes) -> bytes:
    """The record with a 6-bit packed ID string rewritten as 8-bit ASCII (IPMI 2.0 §43.15),
    which pyghmi's own decoder of it would loop on forever."""
    at = _NAME_AT.get(raw[3]) if len(raw) > 5 else None
    if at is None or len(raw) <= at or raw[at] >> 6 != _SIX_BIT:
        return raw
    packed = bytearray(raw[at + 1 : at + 1 + (raw[at] & 0x3F)])
    packed += bytes(-len(packed) % 3)  # whole 3-byte groups of four characters
    text: str = _fru.unpack6bitascii(packed)
    name = text.rstrip().encode("ascii")[:0x3F]
    body = bytes(raw[:at]) + bytes([0xC0 | len(name)]) + name
    return body[:4] + bytes([len(body) - 5]) + body[5:]


def clean(text: str) -> str:
    """A BMC's text without NULs and control characters (PostgreSQL stores no NUL)."""
    return _CONTROL.sub("", text).strip()


# Full sensor record (IPMI 2.0 table 43-1): byte 19 is the readable threshold mask (bit 0
# lower non-critical … bit 5 upper non-recoverable); bytes 37-42 the thresholds, upper
# non-recoverable first. Offsets below count from 0 at the record's first byte.
_READABLE_MASK = 18
_THRESHOLD_BYTES = {
    "upper_non_recoverable": (36, 5),
    "upper_critical": (37, 4),
    "upper_non_critical": (38, 3),
    "lower_non_recoverable": (39, 2),
    "lower_critical": (40, 1),
    "lower_non_critical": (41, 0),
}


def _thresholds(entry: Any, raw: bytes) -> Thresholds | None:
    """The record's readable thresholds, converted with its own formula; None if it has none
    (or is non-linear: those convert only with the BMC's factors for each value)."""
    if raw[3] != _FULL_RECORD or not entry.has_thresholds or len(raw) < 42:
        return None
    if entry.linearization is None or entry.linearization > _NON_LINEAR:
        return None
    mask = raw[_READABLE_MASK]
    values = {
        name: _value(entry, raw[offset])
        for name, (offset, bit) in _THRESHOLD_BYTES.items()
        if mask & (1 << bit)
    }
    return Thresholds(**values) if values else None


def _value(entry: Any, raw: int) -> float:
    if entry.numeric_format == 2:
        raw = _sdr.twos_complement(raw, 8)
    elif entry.numeric_format == 1:
        raw = _sdr.ones_complement(raw, 8)
    return round(float(entry.decode_value(None, raw)), 3)


class _Factors:
    """What pyghmi's decoder asks of a command object for a non-linear sensor: the Get Sensor
    Reading Factors reply, fetched beforehand on the reactor."""

    def __init__(self, reply: bytes | None) -> None:
        self._reply = reply

    def raw_command(self, **_: Any) -> dict[str, Any]:
        if self._reply is None:
            raise ValueError("no conversion factors were read for this non-linear sensor")
        return {"code": 0, "data": bytearray(self._reply)}


def sensor(
    record: SensorRecord,
    reading: bytes | None,
    factors: bytes | None = None,
    *,
    why: str = "",
) -> Sensor:
    """One sensor from its Get Sensor Reading reply. None: the BMC gave no reading (`why`
    says what it answered, when not "not present"); a reading pyghmi cannot decode is one
    unreadable sensor, never a failed read of them all."""
    entry = record.entry
    kind = str(entry.sensor_type)
    if reading is None:
        return Sensor(record.name, kind, SensorState.NOT_PRESENT, states=(why,) if why else (),
                      thresholds=record.thresholds)  # fmt: skip
    try:
        if factors is not None and len(factors) > 1:
            entry.decode_formula(bytearray(factors[1:]))  # this reading's M, B and exponents
        decoded = entry.decode_sensor_reading(_Factors(factors), bytearray(reading))
    except Exception as exc:  # pyghmi's decoders raise what they meet
        log.warning("sensor %s: cannot decode its reading %s", record.name, reading.hex())
        return Sensor(record.name, kind, SensorState.NOT_PRESENT,
                      states=(f"unreadable: {type(exc).__name__}",),
                      thresholds=record.thresholds)  # fmt: skip
    state = SensorState.NOT_PRESENT if decoded.unavailable else _STATES[_worst(decoded.health)]
    value = None if decoded.value is None else round(float(decoded.value), 3)
    return Sensor(
        name=record.name,
        type=kind,
        state=state,
        reading=value,
        unit=str(decoded.units or "").strip() if value is not None else "",
        states=tuple(clean(str(words)) for words in decoded.states),
        thresholds=record.thresholds,
    )


def _worst(flags: int) -> Health:
    """pyghmi's health bits (ok 0, warning 1, critical 2, failed 4) as one verdict."""
    if flags & (_health.Health.Critical | _health.Health.Failed):
        return Health.CRITICAL
    if flags & _health.Health.Warning:
        return Health.WARNING
    return Health.OK


_STATES = {
    Health.OK: SensorState.OK,
    Health.WARNING: SensorState.WARNING,
    Health.CRITICAL: SensorState.CRITICAL,
}


class _Reader:
    """The command object pyghmi's event decoder consults: constants and the OEM hook of a
    BMC without OEM extensions (the generic handler changes nothing)."""

    def __init__(self) -> None:
        self._oem = _generic.OEMHandler({}, self)

    def get_event_constants(self) -> Any:
        return _constants


_PRE_INIT = 0x20000000  # SEL timestamps below this count seconds since the BMC started


def events(entries: list[bytes], repository: Repository, clock: int | None) -> list[LogEvent]:
    """Each 16-byte SEL record, newest first. `clock` is the BMC's Get SEL Time: a timestamp
    from before its clock was set is placed by its distance from that clock, as pyghmi does."""
    view = _SdrView(repository.names())
    decoder = _events.EventHandler(view, _Reader())
    now = time.time()
    decoded: list[LogEvent] = []
    for raw in entries:
        try:
            event = decoder._sel_decode(bytearray(raw))
        except Exception:  # one record pyghmi cannot read stays as its bytes
            event = {"record_id": struct.unpack_from("<H", raw)[0]}
        decoded.append(_event(event, raw, _when(event.get("timecode"), clock, now)))
    decoded.reverse()
    return decoded


@dataclass(frozen=True)
class _SdrView:
    sensors: Mapping[str, Any]


def _when(timecode: int | None, clock: int | None, now: float) -> str | None:
    if timecode is None or timecode == 0xFFFFFFFF:
        return None
    if timecode < _PRE_INIT:
        if clock is None or clock >= _PRE_INIT or clock < timecode:
            return None  # since some boot whose time nobody knows
        seconds = now - (clock - timecode)
    else:
        seconds = float(timecode)
    when = dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=0)
    return when.isoformat().replace("+00:00", "Z")


def _event(event: dict[str, Any], raw: bytes, when: str | None) -> LogEvent:
    record = str(event.get("record_id", struct.unpack_from("<H", raw)[0]))
    severity = _worst(int(event.get("severity", 0)))
    if "event" not in event:  # OEM records: bytes only a vendor's decoder reads
        return LogEvent(record, when, severity, "OEM record (not decoded)", raw=raw.hex())
    words = clean(str(event["event"])) or f"event {event.get('event_id', '?')}"
    detail = event.get("event_data")
    if detail:
        words = f"{words}: {clean(str(detail))}"
    return LogEvent(
        id=record,
        time=when,
        severity=severity,
        message=words,
        sensor=clean(str(event.get("component") or "")),
        sensor_type=clean(str(event.get("component_type") or "")),
        asserted=not event.get("deassertion", False),
        raw=raw.hex(),
    )


def fru(number: int, name: str, raw: bytes, locator: FruLocator | None) -> Fru | None:
    """A FRU's inventory from its bytes; None when pyghmi finds no inventory format in them
    (a memory module's SPD, an empty or erased device)."""
    try:
        found = _fru.FRU(rawdata=bytearray(raw), sdr=None if locator is None else locator.entry)
    except Exception:  # a malformed area: this FRU is left out, not the rest
        log.warning("FRU %d (%s): pyghmi cannot read its %d bytes", number, name, len(raw))
        return None
    info = found.info
    if not info:
        return None
    return Fru(
        id=number,
        name=name,
        board=_area(info, _BOARD),
        product=_area(info, _PRODUCT),
        chassis=_area(info, _CHASSIS),
    )


# pyghmi's FRU keys for each area's fields.
_BOARD = {
    "manufacturer": "Board manufacturer",
    "name": "Board product name",
    "part_number": "Board model",
    "serial_number": "Board serial number",
    "manufactured": "Board manufacture date",
}
_PRODUCT = {
    "manufacturer": "Manufacturer",
    "name": "Product name",
    "part_number": "Model",
    "version": "Hardware Version",
    "serial_number": "Serial Number",
    "asset_tag": "Asset Number",
}
_CHASSIS = {
    "name": "Chassis type",
    "part_number": "Chassis part number",
    "serial_number": "Chassis serial number",
}


def _area(info: dict[str, Any], keys: dict[str, str]) -> FruArea | None:
    if not any(key in info for key in keys.values()):
        return None
    return FruArea(**{field: _text(info.get(key)) for field, key in keys.items()})


def _text(value: Any) -> str:
    """A FRU field as text: binary fields in hex, dates as ISO 8601 UTC."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return value.hex()
    text = clean(str(value))
    if len(text) == 16 and text[10:11] == "T":  # pyghmi's board date, "YYYY-MM-DDTHH:MM"
        return f"{text}:00Z"
    return text
