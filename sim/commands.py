"""The IPMI commands a BMC runs on its machine: identity, chassis power and boot options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from sim.machine import BootDevice, BootOverride, Control, Machine, Power

OK = 0x00
PARAMETER_NOT_SUPPORTED = 0x80  # Get/Set System Boot Options (IPMI 2.0 §28.12)
INVALID_COMMAND = 0xC1
BAD_LENGTH = 0xC7
INVALID_FIELD = 0xCC
INSUFFICIENT_PRIVILEGE = 0xD4
NOT_IN_STATE = 0xD5  # "command not supported in present state"

NETFN_CHASSIS = 0x00
NETFN_APP = 0x06

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
    # device 0x20 rev 1, firmware 1.00 "available", IPMI 2.0, chassis device; IANA 0, product 0
    return OK, bytes([0x20, 0x01, 0x01, 0x00, 0x02, 0x80, 0, 0, 0, 0, 0])


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


COMMANDS: dict[tuple[int, int], tuple[Privilege, Handler]] = {
    (NETFN_APP, 0x01): (Privilege.USER, _device_id),
    (NETFN_APP, 0x04): (Privilege.USER, _self_test),
    (NETFN_APP, 0x37): (Privilege.USER, _guid),
    (NETFN_CHASSIS, 0x01): (Privilege.USER, _chassis_status),
    (NETFN_CHASSIS, 0x02): (Privilege.OPERATOR, _chassis_control),
    (NETFN_CHASSIS, 0x08): (Privilege.OPERATOR, _set_boot_options),
    (NETFN_CHASSIS, 0x09): (Privilege.USER, _get_boot_options),
}
