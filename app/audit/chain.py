"""The hash chain: canonical JSON of an event's fields, chained by SHA-256."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

HASHED_FIELDS = (
    "seq",
    "at",
    "type",
    "outcome",
    "actor_kind",
    "actor_id",
    "actor_name",
    "source_ip",
    "target_type",
    "target_id",
    "target_name",
    "site",
    "ticket",
    "reason",
    "request_id",
    "job_id",
    "session_id",
    "details",
)


AT_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # UTC; how SQLite stores it, and what PostgreSQL can print


def format_at(at: datetime) -> str:
    return at.astimezone(UTC).strftime(AT_FORMAT)


def canonical(fields: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, `at` as UTC text with microseconds: the same bytes on any backend.

    `fields["at"]` is that text already (see `format_at`), so verification never parses dates.
    """
    body = fields if len(fields) == len(HASHED_FIELDS) else {n: fields[n] for n in HASHED_FIELDS}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def link(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(fields)).hexdigest()
