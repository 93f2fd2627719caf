"""The CSV formula rule: no cell a spreadsheet would run, and every value read back as written."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from app.csv_cells import TRIGGERS, line, neutralise, restore

# Text that leans on the rule's edges: triggers, quotes, and both in front of each other.
EDGY = st.text(alphabet=st.sampled_from([*TRIGGERS, "'", "a", " ", "\n", '"', ","]), max_size=8)


@given(st.text() | EDGY)
def test_restore_undoes_neutralise(value: str) -> None:
    assert restore(neutralise(value)) == value


@given(st.lists(st.text() | EDGY, min_size=1, max_size=5))
def test_no_written_cell_starts_a_formula(values: list[str]) -> None:
    (cells,) = csv.reader(io.StringIO(line(values).decode(), newline=""))
    assert [cell for cell in cells if cell[:1] in TRIGGERS] == []
    assert [restore(cell) for cell in cells] == values


def test_the_owasp_cases() -> None:
    evil = '=HYPERLINK("http://evil","x")'
    assert neutralise(evil) == f"'{evil}"
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert neutralise(f"{start}1") == f"'{start}1"
    assert neutralise("web01") == "web01"
    assert neutralise("a=b") == "a=b"  # only the first character counts
    assert neutralise("'=kept") == "''=kept"  # a quote before a trigger gets one more
    assert neutralise("'plain") == "'plain"
    # a CR inside a cell is quoted, so no reader starts a new row (and a formula) there
    written = line(["x\r=HYPERLINK(1)", "y"]).decode()
    assert list(csv.reader(io.StringIO(written, newline=""))) == [["x\r=HYPERLINK(1)", "y"]]


def test_a_quote_typed_by_hand_stays_unless_it_guards_a_formula() -> None:
    assert restore("'plain") == "'plain"
    assert restore("'") == "'"
    assert restore("'=1+1") == "=1+1"  # as a spreadsheet saves a cell typed '=1+1
