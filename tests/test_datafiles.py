"""Files an older version left open to other users are tightened when the app starts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from app.config import Settings
from app.main import create_app
from app.vault import generate_key

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_an_older_data_folder_is_tightened_at_start(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "var"
    cast = data / "recordings" / "2025" / "01" / "02" / "old.cast"
    cast.parent.mkdir(parents=True)
    cast.write_text('{"version": 2}\n')
    (data / "secret.key").write_text(generate_key())
    host_key = data / "sim-host-keys" / "cs1.ed25519"
    host_key.parent.mkdir()
    host_key.write_text("private\n")
    script = data / "recordings" / "replay.sh"  # the owner's bits are kept, x included
    script.write_text("#!/bin/sh\n")
    theirs = data / "notes.txt"  # not Rackhand's: left as it is
    theirs.write_text("the operator's\n")
    database = Path(str(make_url(settings.database_url).database))
    opened = [data, *(path for path in data.rglob("*")), database]
    for path in opened:
        path.chmod(0o755 if path.is_dir() or path == script else 0o644)

    caplog.set_level(logging.WARNING, "app.datafiles")
    with TestClient(create_app(settings.model_copy(update={"data_dir": data}))):
        pass

    modes = {str(path): _mode(path) for path in opened}
    wanted = {str(path): 0o700 if path.is_dir() or path == script else 0o600 for path in opened}
    wanted[str(theirs)] = 0o644
    assert modes == wanted
    said = caplog.text
    assert f"made the folder {data} private (0700)" in said
    assert f"made 9 files and folders in {data} private" in said
    assert f"made the database files {database.name} in {database.parent} private" in said
