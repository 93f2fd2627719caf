"""Reading asciicast v2 recordings back, as a player would print them."""

from __future__ import annotations

import orjson


def cast_output(cast: bytes) -> str:
    """The output events of a cast joined (the header line skipped)."""
    lines = cast.splitlines()[1:]
    return "".join(event[2] for event in map(orjson.loads, lines) if event[1] == "o")
