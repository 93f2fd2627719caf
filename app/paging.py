"""Opaque keyset cursors: stable under inserts, cheap at any depth."""

from __future__ import annotations

import base64
import json
from typing import Any

from app.errors import InvalidInput


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "the cursor is not one this server gave out; pass `next_cursor` from the last page"
        ) from exc
    if not isinstance(key, list) or not key:
        raise InvalidInput(
            "the cursor is not one this server gave out; pass `next_cursor` from the last page"
        )
    return key
