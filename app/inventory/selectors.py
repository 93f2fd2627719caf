"""The one selector grammar of API, CLI and dashboard: ClusterShell node ranges.

ClusterShell builds every index of a range as a Python int before it can count them (10 s and
1.6 GB for `n[1-10000000]`), so a selector is counted from its text first and refused over the
limits; only then is it expanded, off the event loop unless it is tiny.
"""

from __future__ import annotations

import asyncio
import json
import math
import re

from ClusterShell.NodeSet import RESOLVER_NOGROUP, NodeSet, NodeSetParseError
from sqlalchemy import ColumnElement, String, any_, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute

from app.errors import InvalidInput, OverLimit

MAX_SELECTED = 100_000  # names, counted over every part before `!`, `&` and `^` apply
MAX_PIECES = 1_000  # names and ranges written in one selector
MAX_LENGTH = 4096  # characters, as the API's query and body fields allow
_INLINE = 100  # names expanded on the event loop: about a thread hop's cost (0.2 ms)
_ALLOWED = re.compile(r"^[A-Za-z0-9._\-\[\],!&^]+$")
_OPERATORS = frozenset(",!&^")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_SMALL_IN_LIST = 500


def _checked_text(selector: str) -> str:
    text = selector.strip()
    if not text:
        raise InvalidInput("the selector is empty; give node names such as 'web[01-20],db1'")
    if len(text) > MAX_LENGTH:
        raise OverLimit(
            f"the selector has {len(text)} characters, more than the limit {MAX_LENGTH}; "
            "narrow it or filter by site, rack or tag"
        )
    if "@" in text:
        raise InvalidInput(
            "node groups ('@name') are not supported; combine a node range with the "
            "site, rack, kind or tag filters instead"
        )
    if not _ALLOWED.match(text):
        raise InvalidInput(
            f"the selector {selector!r} has characters a node range cannot hold; use names, "
            "ranges in brackets, ',' to join, '!' to exclude, '&' to intersect"
        )
    return text


def _invalid(selector: str, why: str) -> InvalidInput:
    shown = selector if len(selector) <= 80 else f"{selector[:77]}..."
    return InvalidInput(f"the selector {shown!r} is not a valid node range: {why}")


def _operands(text: str) -> list[tuple[str, str]]:
    """(operator, part) pairs, the first joined by ','; commas inside brackets join ranges."""
    parts, depth, start, operator = [], 0, 0, ","
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
            if depth > 1:
                raise _invalid(text, "brackets do not nest")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise _invalid(text, "a ']' closes no '['")
        elif depth == 0 and char in _OPERATORS:
            parts.append((operator, text[start:index]))
            start, operator = index + 1, char
    if depth:
        raise _invalid(text, "a '[' is never closed")
    parts.append((operator, text[start:]))
    if not all(part for _, part in parts):
        raise _invalid(text, "an operator (',', '!', '&', '^') misses a name on one side")
    return parts


def count(selector: str) -> tuple[int, int]:
    """(names, pieces) the selector's text stands for, without expanding one range.

    A part's size is the product of its brackets' sizes; parts add up whatever joins them, so
    `n[1-10000000]!n[1-10000000]` counts the work of expanding it, not its empty result.
    """
    text = _checked_text(selector)
    names = pieces = 0
    for _, part in _operands(text):
        size = 1
        pieces += 1
        for brackets in re.findall(r"\[([^\]]*)\]", part):
            width = 0
            for piece in brackets.split(","):
                found = _RANGE.match(piece)
                if found is None:
                    raise _invalid(selector, f"'[{brackets}]' is not a list of ranges like 1-20")
                low = int(found[1])
                high = int(found[2]) if found[2] is not None else low
                if high < low:
                    raise _invalid(selector, f"the range {piece} goes down")
                width += high - low + 1
                pieces += 1
            size *= width
        names += size
    return names, pieces


def _shown(number: int) -> str:
    """`1,000,000`; a number of hundreds of digits as a power of ten."""
    if number < 10**15:
        return f"{number:,}"
    return f"about 10^{int(math.log10(number))}"


def check(selector: str) -> int:
    """The selector's name count; refused over MAX_SELECTED names or MAX_PIECES pieces."""
    names, pieces = count(selector)
    if names > MAX_SELECTED:
        raise OverLimit(
            f"the selector stands for {_shown(names)} names, more than the limit "
            f"{MAX_SELECTED:,}; narrow it or filter by site, rack or tag"
        )
    if pieces > MAX_PIECES:
        raise OverLimit(
            f"the selector holds {pieces:,} names and ranges, more than the limit "
            f"{MAX_PIECES:,}; join neighbours into ranges or filter by site, rack or tag"
        )
    return names


def _expand_checked(selector: str) -> list[str]:
    """Each part by ClusterShell, the operators on plain sets, left to right as ClusterShell does.

    One NodeSet of many multi-dimensional parts folds them into each other: 90 overlapping
    `n[a-b]x[a-b]y[a-b]` parts (90,000 names) took 79 s; part by part it is linear in names.
    """
    names: set[str] = set()
    for operator, part in _operands(selector.strip()):
        try:
            found = set(NodeSet(part, resolver=RESOLVER_NOGROUP))
        except (NodeSetParseError, ValueError) as exc:
            raise _invalid(selector, str(exc)) from exc
        if operator == ",":
            names |= found
        elif operator == "!":
            names -= found
        elif operator == "&":
            names &= found
        else:
            names ^= found
    return sorted(names)


def expand(selector: str) -> list[str]:
    """`web[01-03],db1` → ['db1', 'web01', 'web02', 'web03']; CPU-bound: see `resolve`."""
    check(selector)
    return _expand_checked(selector)


async def resolve(selector: str) -> list[str]:
    """`expand` for async callers: counted first, expanded in a thread unless it is tiny."""
    if check(selector) <= _INLINE:
        return _expand_checked(selector)
    return await asyncio.to_thread(_expand_checked, selector)


def name_in(
    column: InstrumentedAttribute[str], names: list[str], dialect: str
) -> ColumnElement[bool]:
    """`column IN names` that stays one bound parameter for long lists on both backends."""
    if len(names) <= _SMALL_IN_LIST:
        return column.in_(names)
    if dialect == "postgresql":
        return column == any_(literal(names, ARRAY(String)))
    values = func.json_each(json.dumps(names)).table_valued("value")
    return column.in_(select(values.c.value))
