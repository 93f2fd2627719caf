"""What a simulated server says it is: its identity, and the FRU inventory areas that carry it.

FRU 0 is the server (chassis, board and product areas), FRU 1 its first power supply (board
and product areas), in the Platform Management FRU Information Storage Definition v1.0 format.
Serial numbers derive from the machine's name, so two machines never read alike.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

MANUFACTURER = "Rackhand"
PRODUCT = "RH-1U Simulated Server"
MODEL = "RH1U-SIM"
PART_NUMBER = "RH-1U-0042"
VERSION = "A01"
BOARD_PRODUCT = "RH-1U Mainboard"
BOARD_PART = "RH-MB-0042"
PSU_MANUFACTURER = "Rackhand Power"
PSU_PRODUCT = "RH-PSU-800W"
PSU_PART = "RH-PSU-0800"
FRU_EPOCH = datetime(1996, 1, 1, tzinfo=UTC)
MAX_READ = 0x20  # bytes one Read FRU Data returns at most; more gets 0xCA
RACK_MOUNT = 0x17  # chassis type (SMBIOS)
CHASSIS_FRU, PSU_FRU = 0, 1


@dataclass(frozen=True)
class Identity:
    """A machine's names and numbers, the same over IPMI FRU and Redfish."""

    name: str
    serial: str
    board_serial: str
    psu_serials: tuple[str, str]
    made: datetime

    @property
    def asset_tag(self) -> str:
        return self.name[:32]


def identity(name: str) -> Identity:
    """The identity of the machine called `name`."""
    code = zlib.crc32(name.encode())
    made = datetime(2024, 1, 1, tzinfo=UTC).timestamp() + code % (365 * 86400)
    return Identity(
        name,
        f"SIM{code:08X}",
        f"BRD{code ^ 0x5A5A5A5A:08X}",
        (f"PSU1{code % 10**7:07d}", f"PSU2{code % 10**7:07d}"),
        datetime.fromtimestamp(made - made % 60, UTC),
    )


def _field(text: str) -> bytes:
    data = text.encode("latin-1", "replace")[:63]
    return bytes([0xC0 | len(data)]) + data  # 8-bit ASCII + Latin-1


def _area(head: bytes, fields: list[str]) -> bytes:
    """An info area: version 1, length in 8-byte units, fields, C1h end, zero checksum."""
    body = head + b"".join(_field(text) for text in fields) + b"\xc1"
    length = (len(body) + 3 + 7) // 8 * 8  # with version, length and checksum
    area = bytes([0x01, length // 8]) + body
    area += bytes(length - len(area) - 1)
    return area + bytes([-sum(area) & 0xFF])


def _image(areas: list[bytes | None]) -> bytes:
    """Common header (chassis, board, product offsets) followed by the areas."""
    offsets, data, at = [], b"", 8
    for area in areas:
        offsets.append(at // 8 if area else 0)
        if area:
            data += area
            at += len(area)
    header = bytes([0x01, 0, *offsets, 0, 0])
    return header + bytes([-sum(header) & 0xFF]) + data


def _board(made: datetime, fields: list[str]) -> bytes:
    minutes = int((made - FRU_EPOCH).total_seconds() // 60)
    return _area(bytes([0]) + struct.pack("<I", minutes)[:3], fields)


def images(who: Identity) -> dict[int, bytes]:
    """FRU id -> the inventory bytes of the server and of its first power supply."""
    chassis = _area(bytes([RACK_MOUNT]), [PART_NUMBER, who.serial])
    board = _board(who.made, [MANUFACTURER, BOARD_PRODUCT, who.board_serial, BOARD_PART, ""])
    product = _area(
        bytes([0]),
        [MANUFACTURER, PRODUCT, MODEL, VERSION, who.serial, who.asset_tag, ""],
    )
    psu_board = _board(who.made, [PSU_MANUFACTURER, PSU_PRODUCT, who.psu_serials[0], PSU_PART, ""])
    psu_product = _area(
        bytes([0]), [PSU_MANUFACTURER, PSU_PRODUCT, PSU_PART, VERSION, who.psu_serials[0], "", ""]
    )
    return {
        CHASSIS_FRU: _image([chassis, board, product]),
        PSU_FRU: _image([None, psu_board, psu_product]),
    }
