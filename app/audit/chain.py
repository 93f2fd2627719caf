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


def canonical(values: list[Any]) -> bytes:
    """A compact JSON array of the values of HASHED_FIELDS, in that order: the same bytes on
    any backend. `at` is UTC text with microseconds (`format_at`), `details` the stored JSON
    text (an `orjson.Fragment`), so verification parses neither."""
    return orjson.dumps(values)


def link(prev_hash: str, values: list[Any]) -> str:
    """The event's hash: sha256(prev_hash || canonical(values)), hex."""
    return hashlib.sha256(prev_hash.encode() + canonical(values)).hexdigest()
