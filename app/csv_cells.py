"""CSV cells that a spreadsheet shows as text and never runs (formula injection), reversibly.

Excel, LibreOffice and Google Sheets take a cell that begins with `=`, `+`, `-`, `@`, a tab or
a carriage return for a formula: a ticket `=HYPERLINK("http://evil","x")` in an audit export
became a link. Every CSV Rackhand writes prefixes such a cell with `'` (OWASP's rule), which
spreadsheets show as text. The device import reads its own export back unchanged: a cell that
already begins with `'`s before such a character gets one more, and `restore` takes exactly
one away from the cells `neutralise` prefixed, so `restore(neutralise(v)) == v` for any text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

TRIGGERS = frozenset("=+-@\t\r")
QUOTE = "'"


def _runnable(value: str) -> bool:
    """Whether a spreadsheet would run it, or would once a leading `'` is taken away."""
    return value.lstrip(QUOTE)[:1] in TRIGGERS


def neutralise(value: str) -> str:
    return QUOTE + value if _runnable(value) else value


def restore(cell: str) -> str:
    """The value `neutralise` was given; other cells (`'x` typed by hand) stay as they are."""
    return cell[1:] if cell.startswith(QUOTE) and _runnable(cell) else cell


def line(cells: Iterable[str]) -> bytes:
    """One CSV record (RFC 4180), every cell neutralised.

    Lines end in CRLF so that the csv module quotes a cell holding a lone CR: with "\n" it
    did not, and a spreadsheet broke the row there (`x<CR>=HYPERLINK(…)` began a new row with
    a formula the prefix had not seen).
    """
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([neutralise(cell) for cell in cells])
    return buffer.getvalue().encode()
