"""The IPMI health conversations, driven against a scripted BMC: what they ask and what they
make of the answers (the same generators the reactor runs on real sessions; the tests against
ipmi_sim and our simulator are in tests/health/)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest

from agents.drivers.base import Refused, Unsupported
from agents.drivers.ipmi_health import SdrCache, conversation
from agents.drivers.ipmi_reactor import Answer, Request
from agents.protocol import Health, HealthData, HealthRead, SensorState, Thresholds

BMC = "10.0.0.1:623"


def full_record(
    record_id: int,
    number: int,
    name: str,
    *,
    sensor_type: int,
    unit: int,
    m: int,
    thresholds: dict[str, int],
) -> bytes:
    """A Full Sensor Record (IPMI 2.0 table 43-1) of a linear, unsigned threshold sensor."""
    order = ("unr", "ucr", "unc", "lnr", "lcr", "lnc")  # bytes 37-42
    readable = {"lnc": 0, "lcr": 1, "lnr": 2, "unc": 3, "ucr": 4, "unr": 5}
    mask = sum(1 << readable[key] for key in thresholds)
    body = bytes([
        0x20, 0x00, number, 0x1D, 0x01, 0x7F, 0x04, sensor_type, 0x01,  # bytes 6-14
        0, 0, 0, 0, mask, 0,  # masks, bytes 15-20
        0x00, unit, 0x00, 0x00, m & 0xFF, 0, 0, 0, 0, 0,  # units .. R/B exponents (21-30)
        0, 0, 0, 0, 0xFF, 0x00,  # analog flags, nominal, normal max/min, sensor max/min
        *(thresholds.get(key, 0) for key in order),  # 37-42
        0, 0, 0, 0, 0,  # hysteresis, reserved, OEM
        0xC0 | len(name), *name.encode(),
    ])  # fmt: skip
    return struct.pack("<HBBB", record_id, 0x51, 0x01, len(body)) + body


def compact_record(record_id: int, number: int, name: str, *, sensor_type: int) -> bytes:
    """A Compact Sensor Record (table 43-2) of a sensor-specific discrete sensor."""
    body = bytes([
        0x20, 0x00, number, 0x0A, 0x01, 0x7F, 0x40, sensor_type, 0x6F,
        0xFF, 0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xC0 | len(name), *name.encode(),
    ])  # fmt: skip
    return struct.pack("<HBBB", record_id, 0x51, 0x02, len(body)) + body


FAN = full_record(1, 0x30, "Fan2", sensor_type=0x04, unit=18, m=100,
                  thresholds={"lcr": 5, "lnc": 8})  # fmt: skip
TEMP = full_record(2, 0x01, "Inlet Temp", sensor_type=0x01, unit=1, m=1,
                   thresholds={"unc": 40, "ucr": 45})  # fmt: skip
PSU = compact_record(3, 0x50, "PSU2", sensor_type=0x08)


@dataclass
class ScriptedBmc:
    """Answers the storage, sensor and FRU commands from fixed records, as a BMC would."""

    records: list[bytes]
    readings: dict[int, bytes]
    sel: list[bytes] = field(default_factory=list)
    fru: dict[int, bytes] = field(default_factory=dict)
    most: int = 0xFF  # bytes a Get SDR reply may carry; more is 0xCA
    fru_most: int = 32  # bytes a Read FRU Data reply may carry; more is 0xCA
    next_ids: dict[int, int] = field(default_factory=dict)  # a SEL chain of the BMC's own
    logging: int = 0  # SEL entries logged while the log is read (each Get SEL Info: one more)
    refused: dict[int, int] = field(default_factory=dict)  # sensor number → completion code
    additions: int = 1
    reservation: int = 0
    asked: list[str] = field(default_factory=list)
    cleared: bool = False
    added_while_clearing: bool = False

    def answer(self, request: Request) -> Answer:
        self.asked.append(request.name)
        key = (request.netfn, request.command)
        data = request.data
        if key == (0x06, 0x01):
            return Answer(
                0, bytes([0x20, 0x81, 0x01, 0x00, 0x02, 0xBF, 0x57, 0x01, 0x00, 0x34, 0x12])
            )
        if key == (0x0A, 0x20):
            count = len(self.records)
            return Answer(
                0,
                bytes([0x51, count, 0, 0xFF, 0xFF])
                + struct.pack("<II", self.additions, 0)
                + b"\x02",
            )
        if key in ((0x0A, 0x22), (0x0A, 0x42)):
            self.reservation += 1
            return Answer(0, struct.pack("<H", self.reservation))
        if key == (0x0A, 0x23):
            _, record_id, offset, size = struct.unpack("<HHBB", data)
            index = 0 if record_id == 0 else record_id - 1
            if index >= len(self.records):
                return Answer(0xCB, b"")
            record = self.records[index]
            want = len(record) - offset if size == 0xFF else size
            if want > self.most:
                return Answer(0xCA, b"")
            following = index + 2 if index + 1 < len(self.records) else 0xFFFF
            return Answer(0, struct.pack("<H", following) + record[offset : offset + want])
        if key == (0x04, 0x2D):
            if data[0] in self.refused:
                return Answer(self.refused[data[0]], b"")
            reading = self.readings.get(data[0])
            return Answer(0xCB, b"") if reading is None else Answer(0, reading)
        if key == (0x0A, 0x40):
            if self.logging:
                self.logging -= 1
                self.sel.append(_sel_entry(len(self.sel) + 1, 0x67000000, 0x30, 0x04, 1, 2))
            added = struct.pack("<I", len(self.sel))  # the last addition's time, as it moves
            return Answer(0, bytes([0x51]) + struct.pack("<H", len(self.sel)) + bytes(2) + added
                          + bytes(5))  # fmt: skip
        if key == (0x0A, 0x43):
            _, record_id, _, _ = struct.unpack("<HHBB", data)
            index = 0 if record_id == 0 else record_id - 1
            if index >= len(self.sel):
                return Answer(0xCB, b"")
            following = index + 2 if index + 1 < len(self.sel) else 0xFFFF
            following = self.next_ids.get(index + 1, following)
            return Answer(0, struct.pack("<H", following) + self.sel[index])
        if key == (0x0A, 0x47):
            if self.added_while_clearing:
                return Answer(0xC5, b"")
            self.cleared = True
            return Answer(0, b"\x01")
        if key == (0x0A, 0x48):
            return Answer(0, struct.pack("<I", 0x60000000))
        if key == (0x0A, 0x10):
            raw = self.fru.get(data[0])
            return Answer(0xCB, b"") if raw is None else Answer(0, struct.pack("<HB", len(raw), 0))
        if key == (0x0A, 0x11):
            number, offset, count = struct.unpack("<BHB", data)
            if count > self.fru_most:
                return Answer(0xCA, b"")
            chunk = self.fru[number][offset : offset + count]
            return Answer(0, bytes([len(chunk)]) + chunk)
        raise AssertionError(f"unexpected {request.name}")


def run(bmc: ScriptedBmc, read: HealthRead, cache: SdrCache | None = None) -> HealthData:
    """Drive the conversation as the reactor does: codes it accepts come back to it."""
    talk = conversation(cache or SdrCache(), BMC, read).start()
    request = next(talk)
    while True:
        answer = bmc.answer(request)
        if answer.code and answer.code not in request.accept:
            raise Refused(f"{request.name}: completion code {answer.code:#x}")
        try:
            request = talk.send(answer)
        except StopIteration as done:
            data: HealthData = done.value
            return data


def healthy_bmc(**fields: object) -> ScriptedBmc:
    readings = {
        0x30: bytes([0x00, 0x40, 0x03]),  # fan at 0 RPM: below lower non-critical and critical
        0x01: bytes([24, 0x40, 0x00]),
        0x50: bytes([0x00, 0x40, 0x03, 0x00]),  # presence detected, failure detected
    }
    return ScriptedBmc([FAN, TEMP, PSU], readings, **fields)  # type: ignore[arg-type]


def test_sensors_are_read_and_judged_as_pyghmi_decodes_them() -> None:
    data = run(healthy_bmc(), HealthRead.SENSORS)
    by_name = {sensor.name: sensor for sensor in data.sensors}
    fan = by_name["Fan2"]
    assert (fan.type, fan.reading, fan.unit, fan.state) == ("Fan", 0.0, "RPM", SensorState.CRITICAL)
    assert fan.thresholds == Thresholds(lower_critical=500.0, lower_non_critical=800.0)
    assert "lower critical threshold" in fan.states
    inlet = by_name["Inlet Temp"]
    assert (inlet.reading, inlet.unit, inlet.state) == (24.0, "°C", SensorState.OK)
    assert inlet.thresholds == Thresholds(upper_non_critical=40.0, upper_critical=45.0)
    psu = by_name["PSU2"]
    assert psu.type == "Power Supply"
    assert psu.state is SensorState.CRITICAL
    assert psu.thresholds is None
    assert psu.states == ("Present", "Failure")


def test_the_sdr_is_read_once_while_its_timestamps_stay() -> None:
    cache = SdrCache()
    bmc = healthy_bmc()
    run(bmc, HealthRead.SENSORS, cache)
    bmc.asked.clear()
    run(bmc, HealthRead.SENSORS, cache)
    assert "Get SDR" not in bmc.asked
    assert len(bmc.asked) == 2 + 3  # device id, repository info, one reading per sensor
    bmc.additions += 1  # a record was added: the repository is read again
    bmc.asked.clear()
    run(bmc, HealthRead.SENSORS, cache)
    assert bmc.asked.count("Get SDR") == 3


def test_a_bmc_that_cannot_return_whole_records_is_read_in_parts() -> None:
    bmc = healthy_bmc(most=16)
    data = run(bmc, HealthRead.SENSORS)
    assert {sensor.name for sensor in data.sensors} == {"Fan2", "Inlet Temp", "PSU2"}
    assert "Reserve SDR Repository" in bmc.asked


def test_a_sensor_the_bmc_says_is_absent_is_not_present() -> None:
    bmc = healthy_bmc()
    del bmc.readings[0x01]
    data = run(bmc, HealthRead.SENSORS)
    inlet = next(sensor for sensor in data.sensors if sensor.name == "Inlet Temp")
    assert inlet.state is SensorState.NOT_PRESENT
    assert inlet.reading is None


def test_an_empty_repository_reads_as_no_sensors() -> None:
    assert run(ScriptedBmc([], {}), HealthRead.SENSORS).sensors == ()


def test_a_bmc_without_an_sdr_repository_is_unsupported() -> None:
    class DeviceSdrsOnly(ScriptedBmc):
        def answer(self, request: Request) -> Answer:
            if (request.netfn, request.command) == (0x06, 0x01):
                return Answer(0, bytes([0x20, 0x81, 1, 0, 2, 0x01, 0, 0, 0, 0, 0]))
            return super().answer(request)

    with pytest.raises(Unsupported, match="no SDR repository"):
        run(DeviceSdrsOnly([], {}), HealthRead.SENSORS)


def _sel_entry(record_id: int, timestamp: int, number: int, sensor_type: int, direction: int,
               offset: int) -> bytes:  # fmt: skip
    return struct.pack("<HBI", record_id, 0x02, timestamp) + bytes(
        [0x20, 0x00, 0x04, sensor_type, number, direction, 0x50 | offset, 0x00, 0x05]
    )


def test_the_event_log_is_decoded_newest_first_with_sensor_names() -> None:
    bmc = healthy_bmc(sel=[
        _sel_entry(1, 0x67000000, 0x30, 0x04, 0x01, 0x02),  # Fan2: lower critical going low
        _sel_entry(2, 0x67000100, 0x50, 0x08, 0x6F, 0x01),  # PSU2: failure detected
        _sel_entry(3, 0x67000200, 0x30, 0x04, 0x81, 0x02),  # Fan2: ... deasserted
    ])  # fmt: skip
    events = run(bmc, HealthRead.EVENTS).events
    assert [event.id for event in events] == ["3", "2", "1"]
    newest = events[0]
    assert (newest.sensor, newest.sensor_type, newest.asserted) == ("Fan2", "Fan", False)
    assert events[1].sensor == "PSU2"
    assert events[1].severity is Health.CRITICAL
    assert "Failure" in events[1].message
    assert events[2].time == "2024-10-04T14:47:28Z"  # 0x67000000 s after 1970, in UTC
    assert not bmc.cleared


def test_clearing_reads_to_the_end_under_a_reservation_first() -> None:
    bmc = healthy_bmc(sel=[_sel_entry(1, 0x67000000, 0x30, 0x04, 0x01, 0x02)])
    events = run(bmc, HealthRead.CLEAR_EVENTS).events
    assert bmc.cleared
    assert [event.id for event in events] == ["1"]
    assert bmc.asked.index("Reserve SEL") < bmc.asked.index("Clear SEL")


def test_an_entry_logged_while_clearing_refuses_the_clear() -> None:
    bmc = healthy_bmc(sel=[_sel_entry(1, 0x67000000, 0x30, 0x04, 0x01, 0x02)],
                      added_while_clearing=True)  # fmt: skip
    with pytest.raises(Refused, match="nothing was cleared"):
        run(bmc, HealthRead.CLEAR_EVENTS)
    assert not bmc.cleared


def _fru_bytes() -> bytes:
    """FRU 0 with a board and a product area (IPMI Platform Management FRU spec)."""

    def area(fields: list[bytes], head: bytes) -> bytes:
        body = head + b"".join(bytes([0xC0 | len(value)]) + value for value in fields) + b"\xc1"
        body += b"\x00" * (-(len(body) + 1) % 8)
        body = body[:1] + bytes([(len(body) + 1) // 8]) + body[2:]
        return body + bytes([-sum(body) & 0xFF])

    board = area([b"Acme", b"X11 board", b"BRD123", b"PN-B"], b"\x01\x00\x00\x00\x00\x00")
    product = area(
        [b"Acme", b"R100 server", b"R100-A", b"v2", b"SN0042", b"ASSET7"], b"\x01\x00\x00"
    )
    header = bytes([0x01, 0x00, 0x00, 0x01, 1 + len(board) // 8, 0x00, 0x00])
    header += bytes([-sum(header) & 0xFF])
    return header + board + product


def test_fru_zero_is_read_in_chunks_the_bmc_accepts() -> None:
    bmc = healthy_bmc(fru={0: _fru_bytes()})
    (system,) = run(bmc, HealthRead.INVENTORY).inventory
    assert system.name == "System"
    assert system.product is not None
    assert system.board is not None
    assert (system.product.manufacturer, system.product.name) == ("Acme", "R100 server")
    assert (system.product.serial_number, system.product.asset_tag) == ("SN0042", "ASSET7")
    assert (system.board.serial_number, system.board.part_number) == ("BRD123", "PN-B")
    assert bmc.asked.count("Read FRU Data (0)") > 2  # 224 bytes asked, 32 at most answered


def six_bit(text: str) -> bytes:
    """`text` as IPMI's 6-bit packed ASCII (four characters in three bytes)."""
    codes = [ord(char) - 0x20 for char in text.upper()]
    codes += [0] * (-len(codes) % 4)
    packed = bytearray()
    for a, b, c, d in zip(*[iter(codes)] * 4, strict=True):
        packed += bytes([a | (b & 0x03) << 6, b >> 2 | (c & 0x0F) << 4, c >> 4 | d << 2])
    return bytes(packed)


def test_a_name_in_six_bit_ascii_is_read_not_looped_on() -> None:
    """pyghmi's decoder of 6-bit names never ends; the record is rewritten before it."""
    name = six_bit("SYS FAN")
    record = bytearray(compact_record(4, 0x51, "X", sensor_type=0x04))
    record[31:] = bytes([0x80 | len(name)]) + name
    record[4] = len(record) - 5
    bmc = healthy_bmc()
    bmc.records.append(bytes(record))
    bmc.readings[0x51] = bytes([0x00, 0x40, 0x00, 0x00])
    names = {sensor.name for sensor in run(bmc, HealthRead.SENSORS).sensors}
    assert "SYS FAN" in names


def test_a_name_with_nul_bytes_is_stored_without_them() -> None:
    record = full_record(1, 0x30, "Fan\x002", sensor_type=0x04, unit=18, m=100,
                         thresholds={"lcr": 5})  # fmt: skip
    bmc = ScriptedBmc([record], {0x30: bytes([60, 0x40, 0])})
    (fan,) = run(bmc, HealthRead.SENSORS).sensors
    assert fan.name == "Fan2"


def test_one_sensor_refused_leaves_the_others_read() -> None:
    bmc = healthy_bmc(refused={0x01: 0xD5})
    by_name = {sensor.name: sensor for sensor in run(bmc, HealthRead.SENSORS).sensors}
    assert by_name["Inlet Temp"].state is SensorState.NOT_PRESENT
    assert by_name["Inlet Temp"].states == ("no reading (code D5h)",)
    assert by_name["Fan2"].state is SensorState.CRITICAL


def test_a_sensor_of_another_controller_is_not_read_by_its_number_alone() -> None:
    other = bytearray(TEMP)
    other[5] = 0x2C  # owned by the management engine, not the BMC
    bmc = healthy_bmc()
    bmc.records[1] = bytes(other)
    names = {sensor.name for sensor in run(bmc, HealthRead.SENSORS).sensors}
    assert names == {"Fan2", "PSU2"}
    assert bmc.asked.count("Get Sensor Reading (Inlet Temp)") == 0


def test_a_non_linear_sensor_is_read_with_the_bmcs_factors() -> None:
    record = bytearray(full_record(4, 0x40, "Exhaust", sensor_type=0x01, unit=1, m=1,
                                   thresholds={"ucr": 80}))  # fmt: skip
    record[23] = 0x70  # linearization: non-linear, factors per reading
    bmc = ScriptedBmc([bytes(record)], {0x40: bytes([20, 0x40, 0x00])})
    factors = bytes([0x00, 2, 0, 0, 0, 0, 0])  # next reading, then M=2, B=0, exponents 0

    class WithFactors(ScriptedBmc):
        def answer(self, request: Request) -> Answer:
            if (request.netfn, request.command) == (0x04, 0x23):
                return Answer(0, factors)
            return super().answer(request)

    (exhaust,) = run(WithFactors(bmc.records, bmc.readings), HealthRead.SENSORS).sensors
    assert (exhaust.reading, exhaust.state) == (40.0, SensorState.OK)


def test_a_fru_the_bmc_never_returns_ends_the_read_instead_of_looping() -> None:
    bmc = healthy_bmc(fru={0: _fru_bytes()}, fru_most=0)
    with pytest.raises(Refused, match="returns no part of FRU 0"):
        run(bmc, HealthRead.INVENTORY)
    assert len(bmc.asked) < 20


def test_an_event_log_chained_in_a_circle_ends_the_read() -> None:
    bmc = healthy_bmc(sel=[_sel_entry(1, 0x67000000, 0x30, 0x04, 1, 2),
                           _sel_entry(2, 0x67000001, 0x30, 0x04, 1, 2)],
                      next_ids={2: 1})  # fmt: skip
    with pytest.raises(Refused, match="in a circle"):
        run(bmc, HealthRead.EVENTS)


def test_entries_logged_while_clearing_are_read_before_the_clear() -> None:
    """A BMC that keeps its reservation when an entry arrives (as ipmi_sim does): the tail is
    read again until the log's last-addition time holds still, then cleared."""
    bmc = healthy_bmc(sel=[_sel_entry(1, 0x67000000, 0x30, 0x04, 0x01, 0x02)], logging=2)
    events = run(bmc, HealthRead.CLEAR_EVENTS).events
    assert bmc.cleared
    assert len(events) == len(bmc.sel) == 3  # all that was cleared was read first


def test_a_log_that_never_holds_still_is_not_cleared() -> None:
    bmc = healthy_bmc(sel=[_sel_entry(1, 0x67000000, 0x30, 0x04, 0x01, 0x02)], logging=50)
    with pytest.raises(Refused, match="keeps logging events; nothing was cleared"):
        run(bmc, HealthRead.CLEAR_EVENTS)
    assert not bmc.cleared
