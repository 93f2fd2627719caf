"""FRU inventory: the bytes a BMC stores (IPMI Platform Management FRU Information Storage
Definition 1.0: a common header, then chassis, board and product areas of 8-bit ASCII fields),
and what a simulated server says it is (its identity, and the FRU images that carry it).

FRU 0 is the server (chassis, board and product areas), FRU 1 its first power supply (board
and product areas). Serial numbers derive from the machine's name, so two machines never read
alike. Built here rather than copied from a dump so the values a test compares against are the
ones written, and every checksum is right by construction.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

_FORMAT_VERSION = 0x01
_END_OF_FIELDS = 0xC1
_ENGLISH = 0x00
# Board manufacturing times count minutes from here (FRU spec 11, byte 3).
_BOARD_EPOCH = datetime(1996, 1, 1, tzinfo=UTC)
_ASCII_8BIT = 0xC0
_MAX_FIELD = 63


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


@dataclass(frozen=True)
class Chassis:
    """The chassis info area; `type` is an SMBIOS chassis type (0x17: rack mount chassis)."""

    type: int
    part_number: str
    serial_number: str


@dataclass(frozen=True)
class Board:
    """The board info area; `manufactured_at` is kept to the minute."""

    manufactured_at: datetime
    manufacturer: str
    product_name: str
    serial_number: str
    part_number: str


@dataclass(frozen=True)
class Product:
    """The product info area."""

    manufacturer: str
    product_name: str
    part_number: str
    version: str
    serial_number: str
    asset_tag: str


@dataclass(frozen=True)
class Fru:
    """One FRU device's inventory: the areas servers usually fill (a part may lack some)."""

    chassis: Chassis | None = None
    board: Board | None = None
    product: Product | None = None

    def encode(self) -> bytes:
        """The FRU device's bytes: header, chassis, board, product, each 8-byte aligned."""
        areas = [
            _chassis_area(self.chassis) if self.chassis else b"",
            _board_area(self.board) if self.board else b"",
            _product_area(self.product) if self.product else b"",
        ]
        offsets: list[int] = []
        at = 8
        for area in areas:
            offsets.append(at // 8 if area else 0)  # 0: no such area
            at += len(area)
        # internal use, chassis, board, product, multi-record, pad
        header = bytes([_FORMAT_VERSION, 0, *offsets, 0, 0])
        return _with_checksum(header) + b"".join(areas)


def _chassis_area(chassis: Chassis) -> bytes:
    return _area(bytes([chassis.type]), chassis.part_number, chassis.serial_number)


def _board_area(board: Board) -> bytes:
    minutes = int((board.manufactured_at - _BOARD_EPOCH).total_seconds()) // 60
    fixed = bytes([_ENGLISH]) + minutes.to_bytes(3, "little")
    fields = (board.manufacturer, board.product_name, board.serial_number, board.part_number)
    return _area(fixed, *fields, "")  # the last one: FRU file ID, empty


def _product_area(product: Product) -> bytes:
    fields = (
        product.manufacturer,
        product.product_name,
        product.part_number,
        product.version,
        product.serial_number,
        product.asset_tag,
        "",  # FRU file ID
    )
    return _area(bytes([_ENGLISH]), *fields)


def _area(fixed: bytes, *fields: str) -> bytes:
    """Version, length in 8-byte units, the fixed bytes, the fields, end marker, pad, checksum."""
    body = fixed + b"".join(_field(text) for text in fields) + bytes([_END_OF_FIELDS])
    length = -(-(2 + len(body) + 1) // 8) * 8
    area = bytes([_FORMAT_VERSION, length // 8]) + body
    return _with_checksum(area.ljust(length - 1, b"\0"))


def _field(text: str) -> bytes:
    data = text.encode("ascii")
    if len(data) > _MAX_FIELD:
        raise ValueError(f"FRU field longer than {_MAX_FIELD} bytes: {text!r}")
    return bytes([_ASCII_8BIT | len(data)]) + data


def _with_checksum(data: bytes) -> bytes:
    """`data` and the zero checksum byte that makes the whole sum 0 modulo 256."""
    return data + bytes([-sum(data) & 0xFF])


def images(who: Identity) -> dict[int, bytes]:
    """FRU id -> the inventory bytes of the server and of its first power supply."""
    server = Fru(
        Chassis(RACK_MOUNT, PART_NUMBER, who.serial),
        Board(who.made, MANUFACTURER, BOARD_PRODUCT, who.board_serial, BOARD_PART),
        Product(MANUFACTURER, PRODUCT, MODEL, VERSION, who.serial, who.asset_tag),
    )
    psu = Fru(
        board=Board(who.made, PSU_MANUFACTURER, PSU_PRODUCT, who.psu_serials[0], PSU_PART),
        product=Product(PSU_MANUFACTURER, PSU_PRODUCT, PSU_PART, VERSION, who.psu_serials[0], ""),
    )
    return {CHASSIS_FRU: server.encode(), PSU_FRU: psu.encode()}
