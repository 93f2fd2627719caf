"""Sensors, the system event log and FRU inventory over IPMI: conversations on warm sessions.

Each read is a `Conversation` the IPMI reactor runs on the BMC's pooled session, one request
at a time, choosing the next from the last answer (the next SDR record id, a smaller chunk
after "cannot return that many bytes"). The commands are IPMI 2.0's: Get Device ID (§20.1),
the SDR repository (§33: Get SDR Repository Info, Reserve SDR Repository, Get SDR), Get
Sensor Reading (§35.14), the SEL (§31: Get SEL Info, Get SEL Entry, Reserve SEL, Clear SEL,
Get SEL Time) and FRU data (§34: Get FRU Inventory Area Info, Read FRU Data). The bytes are
read by pyghmi's own decoders (`pyghmi_decoders.py`).

A BMC's SDR is read once and kept (`SdrCache`, as its raw records) while its device id,
firmware and repository timestamps stay the same: a warm sensor read is two requests plus one
per sensor. Every loop over a BMC's answers is bounded: a BMC that chains its records in a
circle, or shrinks nothing when asked for less, ends the read with an error, never a hang.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass
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
# What a BMC may answer for one sensor that has no reading to give (not present, no such
# sensor, not now, not for us): that sensor is unreadable; the others are still read.
_NO_READING = frozenset({0xC1, 0xC3, 0xCB, 0xCC, 0xCD, 0xCE, 0xD4, 0xD5, 0xD6})

_WHOLE = 0xFF  # Get SDR's "read entire record"
_HEADER = 5  # an SDR record's header: id, version, type, length
_FRU_CHUNK = 224  # bytes per Read FRU Data, as pyghmi asks; smaller when refused
_MAX_RECORDS = 4096  # a repository or event log longer than this is a BMC looping
_MAX_ERASE_POLLS = 50
_MAX_FRU_READS = 512  # Read FRU Data requests for one FRU device (64 KiB at 128 bytes each)
_MIN_CHUNK = 4  # bytes below which a BMC that refuses every size gets no more requests
_SEL_SETTLE = 3  # tail re-reads before a clear, while entries keep arriving
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


@dataclass(frozen=True)
class _Kept:
    stamp: bytes
    records: tuple[bytes, ...]
    manufacturer: int
    product: int


class SdrCache:
    """Each BMC's SDR as last read, for as long as it is unchanged, least recently used out.

    A BMC's repository changes only with its firmware or when records are added or erased,
    which move the timestamps Get SDR Repository Info reports: those and the device id are
    the key's stamp. Kept per BMC, never shared between BMCs of one model: two servers of the
    same model can carry different sensors (a second PSU, more fans). Kept as raw records (some
    60 bytes each), decoded at each use: pyghmi's decoded records weigh twenty times more.
    """

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._kept: OrderedDict[str, _Kept] = OrderedDict()

    def get(self, bmc: str, stamp: bytes) -> decode.Repository | None:
        kept = self._kept.get(bmc)
        if kept is None or kept.stamp != stamp:
            return None
        self._kept.move_to_end(bmc)
        return decode.repository(list(kept.records), kept.manufacturer, kept.product)

    def put(
        self, bmc: str, stamp: bytes, records: list[bytes], manufacturer: int, product: int
    ) -> None:
        self._kept[bmc] = _Kept(stamp, tuple(records), manufacturer, product)
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
        if not record.readable or record.owner != decode.BMC_ADDRESS:
            # Event-only records: the sensor exists only in the event log. Sensors of other
            # controllers (an ME at 2Ch) answer only bridged requests: asked of the BMC by
            # number, another sensor's reading would be read with this one's formula.
            continue
        answer = yield Request(
            _SENSOR,
            0x2D,
            bytes((record.number,)),
            retry=True,
            name=f"Get Sensor Reading ({record.name})",
            lun=record.lun,
            accept=_NO_READING,
        )
        if answer.code:
            why = "" if answer.code == _NOT_PRESENT else f"no reading (code {answer.code:02X}h)"
            sensors.append(decode.sensor(record, None, why=why))
            continue
        factors = None
        if record.needs_factors and answer.data:
            given = yield _factors(record, answer.data[0])
            factors = None if given.code else given.data
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
        accept=_NO_READING,
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
    manufacturer = device[6] | device[7] << 8 | (device[8] & 0x0F) << 16  # 20 bits (IANA)
    product = device[9] | device[10] << 8
    cache.put(bmc, stamp, records, manufacturer, product)
    return decode.repository(records, manufacturer, product)


def _sdr_records(bmc: str) -> Generator[Request, Answer, list[bytes]]:
    """Every record, by Get SDR from record 0 until the next id is FFFFh.

    Whole records first; a BMC that cannot return that much (CAh) is read in parts: the
    header, then chunks halved until they fit, under a reservation (renewed if cancelled).
    """
    records: list[bytes] = []
    seen: set[int] = set()
    record_id, reservation, chunk = 0, 0, _WHOLE
    while record_id != _LAST:
        if record_id in seen or len(records) >= _MAX_RECORDS:
            raise Refused(f"BMC {bmc}: its SDR chains its records in a circle or without end")
        seen.add(record_id)
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
    """The event log, newest first; with `clear`, what it held, then cleared (`_settled`).

    The SDR only names the sensors: a BMC without an SDR repository still has its log read.
    """
    try:
        repository = yield from _repository(cache, bmc)
    except Unsupported:
        repository = decode.Repository((), ())
    info = (yield _SEL_INFO).data
    count = _u16(info[1:3]) if len(info) >= 3 else _MAX_RECORDS
    entries: list[bytes] = []
    last = 0
    if count:
        last = yield from _sel_entries(bmc, entries, 0, 0)
    if clear:
        reservation = _u16((yield _RESERVE_SEL).data)
        yield from _settled(bmc, entries, last, reservation)
        yield from _clear_sel(bmc, reservation)
    clock = yield _SEL_TIME
    now = struct.unpack_from("<I", clock.data)[0] if len(clock.data) >= 4 else None
    return HealthData(events=tuple(decode.events(entries, repository, now)))


def _sel_entries(
    bmc: str, entries: list[bytes], start: int, reservation: int
) -> Generator[Request, Answer, int]:
    """Append the entries from `start` to the end; return the id of the last one read."""
    record_id = last = start
    seen: set[int] = set()
    while record_id != _LAST:
        if record_id in seen or len(entries) >= _MAX_RECORDS:
            raise Refused(f"BMC {bmc}: its event log chains in a circle or without end")
        seen.add(record_id)
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
        record_id = _u16(answer.data)
    return last


def _settled(
    bmc: str, entries: list[bytes], last: int, reservation: int
) -> Generator[Request, Answer, None]:
    """Read the log's tail again under the reservation until no entry arrived meanwhile.

    A new entry does not cancel a SEL reservation on every BMC (ipmi_sim keeps it), so the
    log's last-addition time (Get SEL Info) is compared before and after each re-read; the
    clear follows at once. An entry logged in that one last round trip can still be lost, as
    with every IPMI client (the spec has no atomic read-and-clear); docs/health.md.
    """
    for _ in range(_SEL_SETTLE):
        before = _added((yield _SEL_INFO).data)
        if entries:  # the last entry read, again, and anything after it
            entries.pop()
        yield from _sel_entries(bmc, entries, last if entries or last else 0, reservation)
        if _added((yield _SEL_INFO).data) == before:
            return
    raise Refused(
        f"BMC {bmc} keeps logging events; nothing was cleared, so no entry was lost: read the "
        "log and clear it again"
    )


def _added(info: bytes) -> bytes:
    """Get SEL Info's most recent addition timestamp (bytes 6-9)."""
    return bytes(info[5:9])


def _clear_sel(bmc: str, reservation: int) -> Generator[Request, Answer, None]:
    """Clear SEL with 'CLR' and AAh (initiate), then 00h (status) until erasure completes."""
    clear = struct.pack("<H", reservation) + b"CLR"
    initiate = Request(
        _STORAGE,
        0x47,
        clear + b"\xaa",
        retry=False,  # a clear whose reply is lost is not repeated: it says it may have run
        name="Clear SEL",
        accept=frozenset({_RESERVATION_CANCELLED}),
    )
    answer = yield initiate
    if answer.code == _RESERVATION_CANCELLED:
        raise Refused(
            f"BMC {bmc} logged a new event while its log was being cleared; nothing was "
            "cleared, so no entry was lost: read the log and clear it again"
        )
    for _ in range(_MAX_ERASE_POLLS):
        if answer.data and answer.data[0] & 0x0F == 0x01:  # erasure completed
            return
        answer = yield _request(_STORAGE, 0x47, clear + b"\x00", "Clear SEL (status)")
    raise Refused(f"BMC {bmc} is still erasing its event log; it may be cleared only in part")


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
    for _ in range(_MAX_FRU_READS):
        if len(data) >= size or not chunk:
            break
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
            if chunk <= _MIN_CHUNK:
                raise Refused(f"BMC {bmc} returns no part of FRU {number}")
            chunk = max(_MIN_CHUNK, chunk // 2 + 2)
            continue
        got = answer.data[1 : 1 + answer.data[0]] if answer.data else b""
        if not got:
            break  # the device ends before the size it declared
        data += got
    else:
        raise Refused(f"BMC {bmc}: FRU {number} does not end after {_MAX_FRU_READS} reads")
    return bytes(data)


def _u16(data: bytes) -> int:
    if len(data) < 2:
        raise Refused("a BMC sent a reply too short to carry its 16-bit value")
    value: int = struct.unpack_from("<H", data)[0]
    return value
