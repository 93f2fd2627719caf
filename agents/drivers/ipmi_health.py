"""Sensors, the system event log and FRU inventory over IPMI: conversations on warm sessions.

Each read is a `Conversation` the IPMI reactor runs on the BMC's pooled session, one request
at a time, choosing the next from the last answer (the next SDR record id, a smaller chunk
after "cannot return that many bytes"). The commands are IPMI 2.0's: Get Device ID (§20.1),
the SDR repository (§33: Get SDR Repository Info, Reserve SDR Repository, Get SDR), Get
Sensor Reading (§35.14), the SEL (§31: Get SEL Info, Get SEL Entry, Reserve SEL, Clear SEL,
Get SEL Time) and FRU data (§34: Get FRU Inventory Area Info, Read FRU Data). The bytes are
read by pyghmi's own decoders (`pyghmi_decoders.py`).

A BMC's SDR is read once and kept (`SdrCache`) while its device id, firmware and repository
timestamps stay the same: a warm sensor read is two requests plus one per sensor.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any

from agents.drivers import pyghmi_decoders as decode
from agents.drivers.base import Refused, Unsupported
from agents.drivers.ipmi_reactor import Answer, Conversation, Request
from agents.protocol import Fru, HealthData, HealthRead, Sensor

_APP, _SENSOR, _STORAGE = 0x06, 0x04, 0x0A

# Completion codes a conversation answers itself (IPMI 2.0 table 5-2).
_RESERVATION_CANCELLED = 0xC5
_TOO_LONG = 0xC8  # "request data field length limit exceeded": ipmi_sim's word for too much
_OUT_OF_RANGE = 0xC9  # "parameter out of range": Read FRU Data asked too much at once
_TOO_MANY_BYTES = 0xCA  # "cannot return number of requested data bytes"
_NOT_PRESENT = 0xCB  # "requested sensor, data, or record not present"
_FRU_GONE = frozenset({0x81, 0xC3, 0xC9, 0xCB, 0xCC})  # busy, or no such FRU device

_WHOLE = 0xFF  # Get SDR's "read entire record"
_HEADER = 5  # an SDR record's header: id, version, type, length
_FRU_CHUNK = 224  # bytes per Read FRU Data, as pyghmi asks; smaller when refused
_MAX_RECORDS = 4096  # a repository or event log longer than this is a BMC looping
_MAX_ERASE_POLLS = 50
_LAST = 0xFFFF

Talk = Generator[Request, Answer, Any]


def _request(netfn: int, command: int, data: bytes, name: str, *accept: int) -> Request:
    return Request(netfn, command, data, retry=True, name=name, accept=frozenset(accept))


_DEVICE_ID = _request(_APP, 0x01, b"", "Get Device ID")
_SDR_INFO = _request(_STORAGE, 0x20, b"", "Get SDR Repository Info")
_RESERVE_SDR = _request(_STORAGE, 0x22, b"", "Reserve SDR Repository")
_SEL_INFO = _request(_STORAGE, 0x40, b"", "Get SEL Info")
_RESERVE_SEL = _request(_STORAGE, 0x42, b"", "Reserve SEL")
_SEL_TIME = _request(_STORAGE, 0x48, b"", "Get SEL Time")


class SdrCache:
    """Each BMC's SDR as last read, for as long as it is unchanged, least recently used out.

    A BMC's repository changes only with its firmware or when records are added or erased,
    which move the timestamps Get SDR Repository Info reports: those and the device id are
    the key's stamp. Kept per BMC, never shared between BMCs of one model: two servers of the
    same model can carry different sensors (a second PSU, more fans).
    """

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._kept: OrderedDict[str, tuple[bytes, decode.Repository]] = OrderedDict()

    def get(self, bmc: str, stamp: bytes) -> decode.Repository | None:
        kept = self._kept.get(bmc)
        if kept is None or kept[0] != stamp:
            return None
        self._kept.move_to_end(bmc)
        return kept[1]

    def put(self, bmc: str, stamp: bytes, repository: decode.Repository) -> None:
        self._kept[bmc] = (stamp, repository)
        self._kept.move_to_end(bmc)
        while len(self._kept) > self._size:
            self._kept.popitem(last=False)


def conversation(cache: SdrCache, bmc: str, read: HealthRead) -> Conversation:
    """The conversation that does `read` with the BMC at `bmc` (its endpoint)."""
    talks: dict[HealthRead, Callable[[], Talk]] = {
        HealthRead.SENSORS: lambda: _sensors(cache, bmc),
        HealthRead.EVENTS: lambda: _events(cache, bmc, clear=False),
        HealthRead.CLEAR_EVENTS: lambda: _events(cache, bmc, clear=True),
        HealthRead.INVENTORY: lambda: _inventory(cache, bmc),
    }
    return Conversation(talks[read])


def _sensors(cache: SdrCache, bmc: str) -> Talk:
    repository = yield from _repository(cache, bmc)
    sensors: list[Sensor] = []
    for record in repository.sensors:
        if not record.readable:
            continue  # event-only records: the sensor exists only in the event log
        answer = yield Request(
            _SENSOR,
            0x2D,
            bytes((record.number,)),
            retry=True,
            name=f"Get Sensor Reading ({record.name})",
            lun=record.lun,
            accept=frozenset({_NOT_PRESENT}),
        )
        if answer.code:
            sensors.append(decode.sensor(record, None))
            continue
        factors = None
        if record.needs_factors and answer.data:
            factors = (yield _factors(record, answer.data[0])).data
        sensors.append(decode.sensor(record, answer.data, factors))
    return HealthData(sensors=tuple(sensors))


def _factors(record: decode.SensorRecord, raw: int) -> Request:
    return Request(
        _SENSOR,
        0x23,
        bytes((record.number, raw)),
        retry=True,
        name=f"Get Sensor Reading Factors ({record.name})",
        lun=record.lun,
    )


def _repository(cache: SdrCache, bmc: str) -> Generator[Request, Answer, decode.Repository]:
    device = (yield _DEVICE_ID).data
    if len(device) < 11:
        raise Refused(f"BMC {bmc} sent a short Get Device ID reply")
    if not device[5] & 0x02:  # "SDR repository device" support
        raise Unsupported(
            f"BMC {bmc} keeps no SDR repository (only device SDRs), which Rackhand cannot read"
        )
    info = (yield _SDR_INFO).data
    if len(info) < 14 or info[0] != decode.SDR_VERSION:
        raise Unsupported(f"BMC {bmc} keeps its SDR in a version Rackhand cannot read")
    stamp = bytes(device[:11]) + bytes(info[5:13])  # device, firmware; addition, erase times
    known = cache.get(bmc, stamp)
    if known is not None:
        return known
    records = yield from _sdr_records(bmc)
    manufacturer = device[6] | device[7] << 8 | device[8] << 16
    product = device[9] | device[10] << 8
    repository = decode.repository(records, manufacturer, product)
    cache.put(bmc, stamp, repository)
    return repository


def _sdr_records(bmc: str) -> Generator[Request, Answer, list[bytes]]:
    """Every record, by Get SDR from record 0 until the next id is FFFFh.

    Whole records first; a BMC that cannot return that much (CAh) is read in parts: the
    header, then chunks halved until they fit, under a reservation (renewed if cancelled).
    """
    records: list[bytes] = []
    record_id, reservation, chunk = 0, 0, _WHOLE
    while record_id != _LAST:
        if len(records) >= _MAX_RECORDS:
            raise Refused(f"BMC {bmc}: its SDR does not end after {_MAX_RECORDS} records")
        record = bytearray()
        length: int | None = None
        next_id = record_id
        for _ in range(64):
            if length is not None and len(record) >= length:
                break
            if chunk == _WHOLE:
                want = _WHOLE
            elif length is None:
                want = _HEADER - len(record)
            else:
                want = min(chunk, length - len(record))
            if chunk != _WHOLE and not reservation:
                reservation = _u16((yield _RESERVE_SDR).data)
            answer = yield _get_sdr(reservation, record_id, len(record), want)
            if answer.code == _NOT_PRESENT and not record:  # an empty repository, or the
                return records  # chain names a record erased since: the rest is gone too
            if answer.code == _RESERVATION_CANCELLED:
                reservation = 0
                continue
            if answer.code == _TOO_MANY_BYTES:
                if chunk != _WHOLE and chunk <= _HEADER:
                    raise Refused(f"BMC {bmc} returns no part of SDR record {record_id}")
                chunk = 32 if chunk == _WHOLE else chunk // 2 + 2
                continue
            if len(answer.data) < 2:
                raise Refused(f"BMC {bmc} sent a short Get SDR reply")
            next_id = _u16(answer.data)
            record += answer.data[2:]
            if length is None and len(record) >= _HEADER:
                length = record[4] + _HEADER
            if chunk == _WHOLE and (length is None or len(record) < length):
                raise Refused(f"BMC {bmc} sent SDR record {record_id} cut short")
        if length is None or len(record) < length:
            raise Refused(f"BMC {bmc}: SDR record {record_id} could not be read whole")
        records.append(bytes(record[:length]))
        if next_id == record_id:
            raise Refused(f"BMC {bmc} names SDR record {record_id} as its own successor")
        record_id = next_id
    return records


def _get_sdr(reservation: int, record_id: int, offset: int, size: int) -> Request:
    return _request(
        _STORAGE,
        0x23,
        struct.pack("<HHBB", reservation, record_id, offset, size),
        "Get SDR",
        _RESERVATION_CANCELLED,
        _TOO_MANY_BYTES,
        _NOT_PRESENT,
    )


def _events(cache: SdrCache, bmc: str, *, clear: bool) -> Talk:
    """The event log, newest first; with `clear`, read to its end under a reservation, then
    cleared with it. An entry logged after the read cancels the reservation, so the clear is
    refused instead of losing an entry nobody saw."""
    repository = yield from _repository(cache, bmc)
    info = (yield _SEL_INFO).data
    count = _u16(info[1:3]) if len(info) >= 3 else _MAX_RECORDS
    entries: list[bytes] = []
    last = 0
    if count:
        last = yield from _sel_entries(bmc, entries, 0, 0)
    if clear:
        reservation = _u16((yield _RESERVE_SEL).data)
        if entries:  # read the last entry again and anything after it, under the reservation
            entries.pop()
            yield from _sel_entries(bmc, entries, last, reservation)
        yield from _clear_sel(bmc, reservation)
    clock = yield _SEL_TIME
    now = struct.unpack_from("<I", clock.data)[0] if len(clock.data) >= 4 else None
    return HealthData(events=tuple(decode.events(entries, repository, now)))


def _sel_entries(
    bmc: str, entries: list[bytes], start: int, reservation: int
) -> Generator[Request, Answer, int]:
    """Append the entries from `start` to the end; return the id of the last one read."""
    record_id = last = start
    while record_id != _LAST:
        if len(entries) >= _MAX_RECORDS:
            raise Refused(f"BMC {bmc}: its event log does not end after {_MAX_RECORDS} entries")
        answer = yield _request(
            _STORAGE,
            0x43,
            struct.pack("<HHBB", reservation, record_id, 0, _WHOLE),
            "Get SEL Entry",
            _NOT_PRESENT,
        )
        if answer.code:  # the log is empty, or the entry went meanwhile
            break
        if len(answer.data) < 18:
            raise Refused(f"BMC {bmc} sent a short Get SEL Entry reply")
        last = record_id
        entries.append(bytes(answer.data[2:18]))
        next_id = _u16(answer.data)
        if next_id == record_id:
            raise Refused(f"BMC {bmc} names event log entry {record_id} as its own successor")
        record_id = next_id
    return last


def _clear_sel(bmc: str, reservation: int) -> Generator[Request, Answer, None]:
    """Clear SEL with 'CLR' and AAh (initiate), then 00h (status) until erasure completes."""
    clear = struct.pack("<H", reservation) + b"CLR"
    answer = yield _request(_STORAGE, 0x47, clear + b"\xaa", "Clear SEL", _RESERVATION_CANCELLED)
    if answer.code == _RESERVATION_CANCELLED:
        raise Refused(
            f"BMC {bmc} logged a new event while its log was being cleared; nothing was "
            "cleared, so no entry was lost: read the log and clear it again"
        )
    for _ in range(_MAX_ERASE_POLLS):
        if answer.data and answer.data[0] & 0x0F == 0x01:  # erasure completed
            return
        answer = yield _request(_STORAGE, 0x47, clear + b"\x00", "Clear SEL (status)")


def _inventory(cache: SdrCache, bmc: str) -> Talk:
    """FRU 0 (the system), then each FRU device the SDR locates, as pyghmi's get_inventory."""
    repository = yield from _repository(cache, bmc)
    wanted: list[tuple[int, str, decode.FruLocator | None]] = [(0, "System", None)]
    wanted += [(locator.id, locator.name, locator) for locator in repository.frus if locator.id]
    found: list[Fru] = []
    for number, name, locator in wanted:
        raw = yield from _fru_bytes(bmc, number)
        if raw and (unit := decode.fru(number, name, raw, locator)) is not None:
            found.append(unit)
    return HealthData(inventory=tuple(found))


def _fru_bytes(bmc: str, number: int) -> Generator[Request, Answer, bytes]:
    area = yield _request(
        _STORAGE, 0x10, bytes((number,)), f"Get FRU Inventory Area Info ({number})", *_FRU_GONE
    )
    if area.code or len(area.data) < 2:
        return b""
    size = _u16(area.data)
    data = bytearray()
    chunk = min(_FRU_CHUNK, size)
    while len(data) < size and chunk:
        offset = len(data)
        answer = yield _request(
            _STORAGE,
            0x11,
            struct.pack("<BHB", number, offset, min(chunk, size - offset)),
            f"Read FRU Data ({number})",
            _TOO_LONG,
            _OUT_OF_RANGE,
            _TOO_MANY_BYTES,
        )
        if answer.code:
            if chunk <= 3:
                raise Refused(f"BMC {bmc} returns no part of FRU {number}")
            chunk = chunk // 2 + 2
            continue
        if not answer.data or not answer.data[0]:
            break  # the device ends before the size it declared
        data += answer.data[1 : 1 + answer.data[0]]
    return bytes(data)


def _u16(data: bytes) -> int:
    if len(data) < 2:
        raise Refused("a BMC sent a reply too short to carry its 16-bit value")
    value: int = struct.unpack_from("<H", data)[0]
    return value
