"""Opaque keyset cursors: stable under inserts, cheap at any depth.

A cursor comes back from the caller, so it is input like any other: its key is checked against
the shape its list gave it before a value reaches a query (a forged one is a 400, never a 500).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from app.errors import ForgedCursor

MAX_CURSOR = 1024  # characters; the longest key we give (a 128-character name) is far shorter
_MAX_TEXT = 256
_MAX_KEY = 2**63 - 1  # BIGINT


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *shape: type[int] | type[str]) -> list[Any]:
    """The key, if it has the `shape` its list gives (`int`: a positive 64-bit id, `str`: text
    without NUL); anything else was not made here."""
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise ForgedCursor() from exc
    if not isinstance(key, list) or len(key) != len(shape):
        raise ForgedCursor()
    for value, kind in zip(key, shape, strict=True):
        if not _fits(value, kind):
            raise ForgedCursor()
    return key


def _fits(value: object, kind: type[int] | type[str]) -> bool:
    if kind is int:
        return type(value) is int and 0 < value <= _MAX_KEY
    return isinstance(value, str) and len(value) <= _MAX_TEXT and "\x00" not in value
