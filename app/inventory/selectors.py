"""The one selector grammar of API, CLI and dashboard: ClusterShell node ranges."""

from __future__ import annotations

import json
import re

from ClusterShell.NodeSet import RESOLVER_NOGROUP, NodeSet, NodeSetParseError
from sqlalchemy import ColumnElement, String, any_, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute

from app.errors import InvalidInput

MAX_SELECTED = 100_000
_ALLOWED = re.compile(r"^[A-Za-z0-9._\-\[\],!&^]+$")
_SMALL_IN_LIST = 500


def expand(selector: str) -> list[str]:
    """`web[01-03],db1` → ['db1', 'web01', 'web02', 'web03']; a clear error for bad syntax."""
    text = selector.strip()
    if not text:
        raise InvalidInput("the selector is empty; give node names such as 'web[01-20],db1'")
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
    try:
        nodes = NodeSet(text, resolver=RESOLVER_NOGROUP)
    except (NodeSetParseError, ValueError) as exc:
        raise InvalidInput(f"the selector {selector!r} is not a valid node range: {exc}") from exc
    if len(nodes) > MAX_SELECTED:
        raise InvalidInput(
            f"the selector {selector!r} names {len(nodes)} nodes, more than {MAX_SELECTED}; "
            "narrow it or filter by site, rack or tag"
        )
    return list(nodes)


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
