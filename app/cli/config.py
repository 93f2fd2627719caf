"""~/.config/rackhand/config.toml: read it, and set a few top-level keys keeping the rest."""

from __future__ import annotations

import json
import os
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

CONFIG_FILE = Path("~/.config/rackhand/config.toml").expanduser()
_TABLE = re.compile(r"\s*\[")


def load() -> dict[str, Any]:
    """The file's keys; an absent file is an empty one."""
    return tomllib.loads(CONFIG_FILE.read_text()) if CONFIG_FILE.exists() else {}


def store(values: dict[str, str | datetime]) -> Path:
    """Set top-level keys, keeping the file's other lines and comments; the file is 0600.

    It holds a bearer token, so it is written whole to a private file and moved into place.
    """
    lines = CONFIG_FILE.read_text().splitlines() if CONFIG_FILE.exists() else []
    top = next((n for n, line in enumerate(lines) if _TABLE.match(line)), len(lines))
    setting = re.compile(rf"\s*({'|'.join(map(re.escape, values))})\s*=")
    kept = [line for line in lines[:top] if not setting.match(line)] + lines[top:]
    assigned = [f"{key} = {_value(value)}" for key, value in values.items()]
    text = "\n".join(assigned + kept) + "\n"
    if any(tomllib.loads(text).get(key) != value for key, value in values.items()):
        raise ValueError(f"{CONFIG_FILE} has a layout this command cannot edit; fix it by hand")
    CONFIG_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fresh = CONFIG_FILE.with_name(f".{CONFIG_FILE.name}.{os.getpid()}")
    fresh.unlink(missing_ok=True)
    with os.fdopen(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(text)
    fresh.replace(CONFIG_FILE)
    return CONFIG_FILE


def _value(value: str | datetime) -> str:
    """A TOML value: JSON's string escapes are TOML's; a datetime is a TOML offset date-time."""
    if isinstance(value, datetime):
        return value.isoformat()
    return json.dumps(value, ensure_ascii=False)
