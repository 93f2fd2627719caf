"""The hash chain: canonical JSON of an event's fields, chained by SHA-256."""

from __future__ import annotations

import hashlib
from datetime import datetime
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


def canonical(fields: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTC timestamps with microseconds: the same bytes on any backend."""
    at: datetime = fields["at"]
    body = {name: fields[name] for name in HASHED_FIELDS} | {"at": at.isoformat()}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def link(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(fields)).hexdigest()
