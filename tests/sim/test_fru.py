"""FRU inventory bytes: areas 8-byte aligned where the header says, each with a zero checksum."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sim.fru import Board, Fru, Product
from sim.openipmi_health import FRU, PSU1_FRU


@pytest.mark.parametrize("fru", [FRU, PSU1_FRU])
def test_every_area_sums_to_zero_where_the_header_points(fru: Fru) -> None:
    data = fru.encode()

    assert sum(data[:8]) % 256 == 0
    offsets = [offset * 8 for offset in data[1:5] if offset]
    for offset in offsets:
        length = data[offset + 1] * 8
        assert sum(data[offset : offset + length]) % 256 == 0
    assert offsets[-1] + data[offsets[-1] + 1] * 8 == len(data)


def test_a_missing_area_has_offset_zero() -> None:
    internal, chassis, board, product, multi_record = PSU1_FRU.encode()[1:6]

    assert (internal, chassis, multi_record) == (0, 0, 0)
    assert board == 1  # right after the header
    assert product > board


def test_the_board_date_counts_minutes_from_1996() -> None:
    board = Board(datetime(1996, 1, 2, 0, 1, tzinfo=UTC), "M", "P", "S", "N")

    assert Fru(board=board).encode()[8 + 3 : 8 + 6] == (24 * 60 + 1).to_bytes(3, "little")


def test_a_field_longer_than_63_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 63"):
        Fru(product=Product("M" * 64, "P", "N", "V", "S", "A")).encode()
