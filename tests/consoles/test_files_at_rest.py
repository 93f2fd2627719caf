"""A first start on a new data folder, and a console recorded there: nothing others can read."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url

from app.config import Settings
from tests.factories import ok

# File modes, not the database, are under test (and the generated key needs SQLite).
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """A data folder that does not exist yet, and no service key: the start makes both."""
    return settings.model_copy(update={"data_dir": tmp_path / "new" / "var", "secret_key": None})


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_first_start_and_a_recording_are_private(
    consoles: TestClient, settings: Settings
) -> None:
    """The finding: the database, its WAL and recordings were 0644, the data folder 0755."""
    console = consoles.post("devices/web01/consoles", json={})
    assert console.status_code in (200, 201), console.text
    assert consoles.delete(f"consoles/{console.json()['id']}").status_code == 204
    assert ok(consoles.get(f"consoles/{console.json()['id']}"))["recording_sha256"]

    data = settings.data_dir
    [cast] = data.rglob("*.cast")
    folders = [folder for folder in cast.parents if folder.is_relative_to(data)]
    assert {str(folder.relative_to(data)): _mode(folder) for folder in folders} == {
        str(folder.relative_to(data)): 0o700 for folder in folders
    }
    assert _mode(cast) == 0o600
    assert _mode(data / "secret.key") == 0o600
    database = Path(str(make_url(settings.database_url).database))
    files = [database, database.with_name(f"{database.name}-wal")]
    files.append(database.with_name(f"{database.name}-shm"))
    assert {file.name: _mode(file) for file in files} == {file.name: 0o600 for file in files}
