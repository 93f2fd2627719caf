"""How a URL or body names a catalogue object: by its name or slug, or by its numeric id."""

from __future__ import annotations

MAX_ID = 2**31 - 1  # the database's integer keys


def as_id(ref: str) -> int | None:
    """The id that `ref` spells, or None when it is a name (names are never all digits)."""
    if ref.isascii() and ref.isdigit() and len(ref) <= 10:
        number = int(ref)
        return number if number <= MAX_ID else None
    return None


def unavailable(what: str, value: str) -> str:
    """The refusal of a unique value held at a site the caller cannot see: it names nothing of
    the holder. The refusal itself is the one bit that cannot be hidden (docs/security.md,
    "What a site-scoped caller can learn")."""
    return (
        f"{what} {value!r} is not available; choose another ({what}s are unique across all sites)"
    )
