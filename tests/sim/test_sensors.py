"""The sensor model, SDR, SEL and FRU commands without sockets, as the IPMI spec words them."""

from __future__ import annotations

import struct
import uuid

import pytest

from sim import fru, sdr
from sim.commands import Privilege, Reply, Target, execute
from sim.machine import Machine, Power
from sim.sel import FIRST, LAST
from sim.sensors import ANALOG, BY_NAME, Analog, Health, PsuState, Sensors

SENSOR, STORAGE = 0x04, 0x0A
USER, OPERATOR = Privilege.USER, Privilege.OPERATOR


@pytest.fixture
def target() -> Target:
    return Target(Machine(name="node1"), uuid.uuid4().bytes)


def run(
    target: Target, netfn: int, command: int, data: bytes = b"", privilege: int = USER
) -> Reply:
    return execute(target, netfn, command, data, privilege)


def reading(target: Target, name: str) -> bytes:
    code, data = run(target, SENSOR, 0x2D, bytes([BY_NAME[name].number]))
    assert code == 0
    return data


def events(sensors: Sensors) -> list[tuple[int, int, int, bytes]]:
    """(sensor number, event dir|type, offset, data 2-3) of every record, oldest first."""
    return [(r[11], r[12], r[13] & 0x0F, r[14:16]) for r in sensors.log.records()]


def test_off_only_standby_sensors_read_and_nothing_is_asserted(target: Target) -> None:
    assert reading(target, "Inlet Temp")[1:3] == b"\xc0\xc0"  # scanning, events; all in range
    assert reading(target, "Fan1")[1] & 0x20  # reading unavailable, scanning disabled
    assert not reading(target, "Fan1")[1] & 0x40
    assert target.machine.sensors.value(BY_NAME["Power"]) == 8  # type: ignore[arg-type]
    assert target.machine.sensors.overall() is Health.OK
    assert reading(target, "Pwr Unit Status")[2] == 0x01  # power off/down asserted


def test_a_failed_fan_asserts_then_deasserts_with_trigger_and_threshold(target: Target) -> None:
    machine = target.machine
    machine.press(Power.ON)
    sensors = machine.sensors
    fan = BY_NAME["Fan2"]
    assert isinstance(fan, Analog)
    before = len(sensors.log)
    sensors.set_value("Fan2", 0)
    assert reading(target, "Fan2")[0] == 0
    assert reading(target, "Fan2")[2] & 0x3F == 0b11  # at or below LNC and LC
    assert sensors.health(fan) is Health.CRITICAL
    assert events(sensors)[before:] == [
        (0x31, 0x01, 0x00, bytes([0, 20])),  # LNC going low, reading 0, threshold 1200 RPM
        (0x31, 0x01, 0x02, bytes([0, 10])),  # LC going low, threshold 600 RPM
    ]
    sensors.set_value("Fan2", None)
    assert [event[1] for event in events(sensors)[before + 2 :]] == [0x81, 0x81]  # deassertions
    assert sensors.overall() is Health.OK


def test_power_off_ends_events_silently_and_power_on_asserts_them_again(target: Target) -> None:
    machine = target.machine
    machine.press(Power.ON)
    machine.sensors.set_value("Fan2", 0)
    before = len(machine.sensors.log)
    machine.press(Power.OFF)
    assert events(machine.sensors)[before:] == [(0x50, 0x6F, 0, b"\xff\xff")]
    assert machine.sensors.overall() is Health.OK
    machine.press(Power.ON)
    assert [e[:3] for e in events(machine.sensors)[before + 1 :]] == [
        (0x50, 0xEF, 0),
        (0x31, 0x01, 0x00),
        (0x31, 0x01, 0x02),
    ]


def test_a_temperature_past_upper_thresholds_is_warning_then_critical(target: Target) -> None:
    sensors = target.machine.sensors
    sensors.set_value("Inlet Temp", 40)
    assert sensors.overall() is Health.WARNING
    assert reading(target, "Inlet Temp")[2] & 0x3F == 0b001000
    sensors.set_value("Inlet Temp", 45)
    assert sensors.overall() is Health.CRITICAL
    assert events(sensors)[-1] == (0x01, 0x01, 0x09, bytes([45, 42]))  # UC going high


def test_psu_failure_and_ac_loss_are_logged_and_shown(target: Target) -> None:
    sensors = target.machine.sensors
    before = len(sensors.log)
    sensors.set_state("PSU2", PsuState.FAILED)
    assert reading(target, "PSU2")[2] == 0b0011
    sensors.set_state("PSU2", PsuState.AC_LOST)
    assert reading(target, "PSU2")[2] == 0b1001
    sensors.reset()
    assert [(e[1], e[2]) for e in events(sensors)[before:]] == [
        (0x6F, 1),  # failure asserted
        (0xEF, 1),  # failure deasserted
        (0x6F, 3),  # AC lost asserted
        (0xEF, 3),
    ]
    with pytest.raises(KeyError):
        sensors.set_state("Fan1", PsuState.FAILED)


def test_unknown_sensors_and_thresholds(target: Target) -> None:
    assert run(target, SENSOR, 0x2D, b"\x99") == (0xCB, b"")
    code, data = run(target, SENSOR, 0x27, bytes([BY_NAME["12V"].number]))
    assert (code, data) == (0, bytes([0b011011, 190, 180, 0, 210, 220, 0]))


def test_sdr_reads_in_parts_with_a_reservation(target: Target) -> None:
    code, info = run(target, STORAGE, 0x20)
    assert (code, info[0]) == (0, 0x51)
    count = struct.unpack_from("<H", info, 1)[0]
    assert run(target, STORAGE, 0x23, struct.pack("<HHBB", 0, 0, 0, 0xFF))[0] == 0xCA
    assert run(target, STORAGE, 0x23, struct.pack("<HHBB", 0, 1, 5, 16))[0] == 0xC5
    records, record_id = [], 0
    _, reservation = run(target, STORAGE, 0x22)
    while record_id != 0xFFFF:
        code, head = run(target, STORAGE, 0x23, reservation + struct.pack("<HBB", record_id, 0, 5))
        assert code == 0
        record, size = head[2:], head[2 + 4] + 5
        while len(record) < size:
            part = struct.pack("<HBB", record_id, len(record), min(16, size - len(record)))
            code, more = run(target, STORAGE, 0x23, reservation + part)
            assert code == 0
            record += more[2:]
        records.append(record)
        record_id = struct.unpack_from("<H", head)[0]
    assert len(records) == count == len(sdr.repository())
    assert tuple(records) == sdr.repository()
    assert records[-1][3] == 0x11  # the FRU device locator
    assert run(target, STORAGE, 0x23, struct.pack("<HHBB", 0, 99, 0, 5))[0] == 0xCB


def test_sel_reservations_clear_and_privileges(target: Target) -> None:
    log = target.machine.sensors.log
    code, first = run(target, STORAGE, 0x43, struct.pack("<HHBB", 0, FIRST, 0, 0xFF))
    assert (code, len(first), first[4], first[9:11]) == (0, 18, 0x02, b"\x20\x00")
    code, last = run(target, STORAGE, 0x43, struct.pack("<HHBB", 0, LAST, 0, 0xFF))
    assert struct.unpack_from("<H", last)[0] == LAST
    assert run(target, STORAGE, 0x43, struct.pack("<HHBB", 0, 0x999, 0, 0xFF))[0] == 0xCB
    _, reservation = run(target, STORAGE, 0x42)
    clear = reservation + b"CLR\xaa"
    assert run(target, STORAGE, 0x47, clear, USER)[0] == 0xD4
    entry = bytes(2) + bytes([0x02, 0, 0, 0, 0, 0x41, 0, 0x04, 0x04, 0x30, 0x01, 0x52, 5, 10])
    assert run(target, STORAGE, 0x44, entry, OPERATOR)[0] == 0
    assert run(target, STORAGE, 0x47, clear, OPERATOR)[0] == 0xC5  # the new entry cancelled it
    _, reservation = run(target, STORAGE, 0x42)
    assert run(target, STORAGE, 0x47, reservation + b"CLR\xaa", OPERATOR) == (0, b"\x01")
    assert [record[11:13] for record in log.records()] == [b"\x60\x6f"]  # "log cleared"
    assert struct.unpack_from("<H", run(target, STORAGE, 0x40)[1], 1)[0] == 1


def test_fru_areas_check_out_and_serials_differ() -> None:
    one, two = (fru.images(fru.identity(name)) for name in ("node1", "node2"))
    for image in (one[0], one[1]):
        assert sum(image[:8]) % 256 == 0
        for offset in image[2:5]:
            if offset:
                start = offset * 8
                assert sum(image[start : start + image[start + 1] * 8]) % 256 == 0
    assert fru.identity("node1").serial.encode() in one[0]
    assert fru.identity("node1").serial != fru.identity("node2").serial
    assert one[0] != two[0]


def test_fru_reads_are_limited(target: Target) -> None:
    code, info = run(target, STORAGE, 0x10, b"\x00")
    size = struct.unpack_from("<H", info)[0]
    assert (code, size % 8) == (0, 0)
    assert run(target, STORAGE, 0x11, struct.pack("<BHB", 0, 0, 0x21))[0] == 0xCA
    code, data = run(target, STORAGE, 0x11, struct.pack("<BHB", 0, size - 4, 0x20))
    assert (code, data[0]) == (0, 4)
    assert run(target, STORAGE, 0x10, b"\x07")[0] == 0xCB


def test_machines_read_a_little_differently() -> None:
    one, two = Sensors("node1"), Sensors("node2")
    one.power_changed(True)
    two.power_changed(True)
    values = [(one.value(sensor), two.value(sensor)) for sensor in ANALOG]
    assert any(a != b for a, b in values)
