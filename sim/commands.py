"""The IPMI commands a BMC runs on its machine: identity, power, boot, sensors, SEL and FRU."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from sim import fru, sdr
from sim.machine import BootDevice, BootOverride, Control, Machine, Power
from sim.sensors import BY_NUMBER, Analog, pack_thresholds

OK = 0x00
PARAMETER_NOT_SUPPORTED = 0x80  # Get/Set System Boot Options (IPMI 2.0 §28.12)
INVALID_COMMAND = 0xC1
RESERVATION_CANCELLED = 0xC5
BAD_LENGTH = 0xC7
OUT_OF_RANGE = 0xC9
TOO_MANY_BYTES = 0xCA  # "cannot return number of requested data bytes"
NOT_PRESENT = 0xCB  # "requested sensor, data, or record not present"
INVALID_FIELD = 0xCC
INSUFFICIENT_PRIVILEGE = 0xD4
NOT_IN_STATE = 0xD5  # "command not supported in present state"

NETFN_CHASSIS = 0x00
NETFN_SENSOR = 0x04
NETFN_APP = 0x06
NETFN_STORAGE = 0x0A

BOOT_CODES = {
    BootDevice.NONE: 0,
    BootDevice.PXE: 1,
    BootDevice.DISK: 2,
    BootDevice.SAFE: 3,
    BootDevice.DIAG: 4,
    BootDevice.CDROM: 5,
    BootDevice.BIOS: 6,
    BootDevice.REMOTE_FLOPPY: 7,
    BootDevice.REMOTE_CDROM: 8,
    BootDevice.REMOTE_MEDIA: 9,
    BootDevice.REMOTE_DISK: 11,
    BootDevice.FLOPPY: 15,
}
BOOT_DEVICES = {code: device for device, code in BOOT_CODES.items()}
BOOT_VALID, BOOT_PERSISTENT, BOOT_EFI = 0x80, 0x40, 0x20


class Privilege(IntEnum):
    """Session privilege levels (IPMI 2.0 table 6-1 and §22.13)."""

    CALLBACK = 1
    USER = 2
    OPERATOR = 3
    ADMINISTRATOR = 4


@dataclass
class Target:
    """What the commands act on: the machine plus the BMC's own boot-option bookkeeping."""

    machine: Machine
    guid: bytes
    set_in_progress: int = 0
    valid_bit_clearing: int = 0
    boot_info_ack: int = 0
    sdr_reservation: int = 0
    fru_images: dict[int, bytes] = field(default_factory=dict)  # built on the first FRU read

    def fru_image(self, device: int) -> bytes | None:
        if not self.fru_images:
            self.fru_images = fru.images(self.machine.identity)
        return self.fru_images.get(device)


Reply = tuple[int, bytes]
Handler = Callable[[Target, bytes], Reply]


def execute(target: Target, netfn: int, command: int, data: bytes, privilege: int) -> Reply:
    """Run one command at the session's privilege; (completion code, response data)."""
    entry = COMMANDS.get((netfn, command))
    if entry is None:
        return INVALID_COMMAND, b""
    needed, handler = entry
    if privilege < needed:
        return INSUFFICIENT_PRIVILEGE, b""
    return handler(target, data)


def _device_id(target: Target, data: bytes) -> Reply:
    # device 0x20 rev 1 (no device SDRs), firmware 1.00 "available", IPMI 2.0; a chassis,
    # FRU inventory, SEL, SDR repository and sensor device; IANA 0, product 0
    return OK, bytes([0x20, 0x01, 0x01, 0x00, 0x02, 0x8F, 0, 0, 0, 0, 0])


def _self_test(target: Target, data: bytes) -> Reply:
    return OK, b"\x55\x00"  # 55h: no error


def _guid(target: Target, data: bytes) -> Reply:
    return OK, target.guid


def _chassis_status(target: Target, data: bytes) -> Reply:
    # bit 0 power on; bits 6:5 = 01b power restore policy "previous"
    return OK, bytes([0x21 if target.machine.power is Power.ON else 0x20, 0, 0])


def _chassis_control(target: Target, data: bytes) -> Reply:
    if len(data) != 1:
        return BAD_LENGTH, b""
    try:
        action = Control(data[0] & 0x0F)
    except ValueError:
        return INVALID_FIELD, b""
    return (OK if target.machine.control(action) else NOT_IN_STATE), b""


def _set_boot_options(target: Target, data: bytes) -> Reply:
    if not data:
        return BAD_LENGTH, b""
    parameter, value = data[0] & 0x7F, data[1:]
    sizes = {0: 1, 3: 1, 4: 2, 5: 5}
    if parameter not in sizes:
        return PARAMETER_NOT_SUPPORTED, b""
    if len(value) != sizes[parameter]:
        return BAD_LENGTH, b""
    if parameter == 0:
        target.set_in_progress = value[0] & 0x03
    elif parameter == 3:
        target.valid_bit_clearing = value[0] & 0x1F
    elif parameter == 4:  # byte 1 says which bits of byte 2 to write
        target.boot_info_ack = (target.boot_info_ack & ~value[0]) | (value[1] & value[0])
    else:
        device = BOOT_DEVICES.get((value[1] >> 2) & 0x0F)
        if device is None:
            return INVALID_FIELD, b""
        if not value[0] & BOOT_VALID:
            device = BootDevice.NONE
        persistent, efi = bool(value[0] & BOOT_PERSISTENT), bool(value[0] & BOOT_EFI)
        target.machine.set_boot(BootOverride(device, persistent, efi))
    return OK, b""


def _get_boot_options(target: Target, data: bytes) -> Reply:
    if len(data) != 3:
        return BAD_LENGTH, b""
    parameter = data[0] & 0x7F
    if parameter == 0:
        value = bytes([target.set_in_progress])
    elif parameter == 3:
        value = bytes([target.valid_bit_clearing])
    elif parameter == 4:
        value = bytes([0, target.boot_info_ack])
    elif parameter == 5:
        boot = target.machine.boot
        flags = 0
        if boot.device is not BootDevice.NONE:
            flags = BOOT_VALID
            flags |= BOOT_PERSISTENT if boot.persistent else 0
            flags |= BOOT_EFI if boot.efi else 0
        value = bytes([flags, BOOT_CODES[boot.device] << 2, 0, 0, 0])
    else:
        return PARAMETER_NOT_SUPPORTED, b""
    return OK, bytes([0x01, parameter]) + value  # parameter version 1, parameter valid


def _sensor_reading(target: Target, data: bytes) -> Reply:
    if len(data) != 1:
        return BAD_LENGTH, b""
    reading = target.machine.sensors.reading(data[0])
    return (NOT_PRESENT, b"") if reading is None else (OK, reading)


def _sensor_thresholds(target: Target, data: bytes) -> Reply:
    if len(data) != 1:
        return BAD_LENGTH, b""
    sensor = BY_NUMBER.get(data[0])
    if sensor is None:
        return NOT_PRESENT, b""
    if not isinstance(sensor, Analog):
        return INVALID_COMMAND, b""  # a discrete sensor has no thresholds (§35.9)
    return OK, pack_thresholds(sensor)


def _sdr_info(target: Target, data: bytes) -> Reply:
    return OK, sdr.info()


def _reserve_sdr(target: Target, data: bytes) -> Reply:
    target.sdr_reservation = target.sdr_reservation % 0xFFFF + 1
    return OK, struct.pack("<H", target.sdr_reservation)


def _get_sdr(target: Target, data: bytes) -> Reply:
    if len(data) != 6:
        return BAD_LENGTH, b""
    reservation, record_id, offset, count = struct.unpack("<HHBB", data)
    if offset and (not reservation or reservation != target.sdr_reservation):
        return RESERVATION_CANCELLED, b""
    found = sdr.record(record_id)
    if found is None:
        return NOT_PRESENT, b""
    following, record = found
    if offset >= len(record):
        return OUT_OF_RANGE, b""
    wanted = len(record) - offset if count == sdr.ENTIRE else count
    if wanted > sdr.MAX_READ:
        return TOO_MANY_BYTES, b""
    return OK, struct.pack("<H", following) + record[offset : offset + wanted]


def _sel_info(target: Target, data: bytes) -> Reply:
    return OK, target.machine.sensors.log.info()


def _reserve_sel(target: Target, data: bytes) -> Reply:
    return OK, struct.pack("<H", target.machine.sensors.log.reserve())


def _get_sel_entry(target: Target, data: bytes) -> Reply:
    if len(data) != 6:
        return BAD_LENGTH, b""
    reservation, record_id, offset, count = struct.unpack("<HHBB", data)
    log = target.machine.sensors.log
    if offset and (not reservation or reservation != log.reservation):
        return RESERVATION_CANCELLED, b""
    found = log.entry(record_id)
    if found is None:
        return NOT_PRESENT, b""
    following, record = found
    if offset >= len(record):
        return OUT_OF_RANGE, b""
    end = len(record) if count == sdr.ENTIRE else offset + count
    return OK, struct.pack("<H", following) + record[offset:end]


def _add_sel_entry(target: Target, data: bytes) -> Reply:
    if len(data) != 16:
        return BAD_LENGTH, b""
    body = data[2:]
    if body[0] < 0xE0:  # system event and timestamped OEM records: the SEL stamps them
        body = body[:1] + struct.pack("<I", int(target.machine.sensors.log.wall())) + body[5:]
    return OK, struct.pack("<H", target.machine.sensors.log.add(body))


def _clear_sel(target: Target, data: bytes) -> Reply:
    if len(data) != 6:
        return BAD_LENGTH, b""
    sensors = target.machine.sensors
    reservation = struct.unpack_from("<H", data)[0]
    if data[2:5] != b"CLR":
        return INVALID_FIELD, b""
    if not reservation or reservation != sensors.log.reservation:
        return RESERVATION_CANCELLED, b""
    if data[5] == 0xAA:
        sensors.log.clear()
        sensors.cleared()
    elif data[5] != 0x00:
        return INVALID_FIELD, b""
    return OK, b"\x01"  # erasure completed (it is instant here)


def _sel_time(target: Target, data: bytes) -> Reply:
    return OK, struct.pack("<I", int(target.machine.sensors.log.wall()))


def _fru_info(target: Target, data: bytes) -> Reply:
    if len(data) != 1:
        return BAD_LENGTH, b""
    image = target.fru_image(data[0])
    if image is None:
        return NOT_PRESENT, b""
    return OK, struct.pack("<HB", len(image), 0)  # accessed by bytes


def _read_fru(target: Target, data: bytes) -> Reply:
    if len(data) != 4:
        return BAD_LENGTH, b""
    device, offset, count = struct.unpack("<BHB", data)
    image = target.fru_image(device)
    if image is None:
        return NOT_PRESENT, b""
    if count > fru.MAX_READ:
        return TOO_MANY_BYTES, b""
    if offset >= len(image):
        return OUT_OF_RANGE, b""
    chunk = image[offset : offset + count]
    return OK, bytes([len(chunk)]) + chunk


COMMANDS: dict[tuple[int, int], tuple[Privilege, Handler]] = {
    (NETFN_APP, 0x01): (Privilege.USER, _device_id),
    (NETFN_APP, 0x04): (Privilege.USER, _self_test),
    (NETFN_APP, 0x37): (Privilege.USER, _guid),
    (NETFN_CHASSIS, 0x01): (Privilege.USER, _chassis_status),
    (NETFN_CHASSIS, 0x02): (Privilege.OPERATOR, _chassis_control),
    (NETFN_CHASSIS, 0x08): (Privilege.OPERATOR, _set_boot_options),
    (NETFN_CHASSIS, 0x09): (Privilege.USER, _get_boot_options),
    (NETFN_SENSOR, 0x27): (Privilege.USER, _sensor_thresholds),
    (NETFN_SENSOR, 0x2D): (Privilege.USER, _sensor_reading),
    (NETFN_STORAGE, 0x10): (Privilege.USER, _fru_info),
    (NETFN_STORAGE, 0x11): (Privilege.USER, _read_fru),
    (NETFN_STORAGE, 0x20): (Privilege.USER, _sdr_info),
    (NETFN_STORAGE, 0x22): (Privilege.USER, _reserve_sdr),
    (NETFN_STORAGE, 0x23): (Privilege.USER, _get_sdr),
    (NETFN_STORAGE, 0x40): (Privilege.USER, _sel_info),
    (NETFN_STORAGE, 0x42): (Privilege.USER, _reserve_sel),
    (NETFN_STORAGE, 0x43): (Privilege.USER, _get_sel_entry),
    (NETFN_STORAGE, 0x44): (Privilege.OPERATOR, _add_sel_entry),
    (NETFN_STORAGE, 0x47): (Privilege.OPERATOR, _clear_sel),
    (NETFN_STORAGE, 0x48): (Privilege.USER, _sel_time),
}
