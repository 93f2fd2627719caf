"""The `rackhand` command against a real `rackhand serve` process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import empty_database
from tests.live import RACKHAND, admin_token, free_port, rackhand_serve


@pytest.fixture
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `rackhand serve` on the test database (started per test: it makes the admin)."""
    with rackhand_serve(database_url, tmp_path_factory.mktemp("serve")) as url:
        yield url


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def rackhand(server: str, database_url: str) -> Iterator[Run]:
    token = admin_token(server)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"RACKHAND_URL": server, "RACKHAND_TOKEN": token, "COLUMNS": "200"}
        return subprocess.run(
            [RACKHAND, *args], env=env, capture_output=True, text=True, timeout=60
        )

    auth = {"Authorization": f"Bearer {token}"}
    site = {"slug": "bj-dc1", "name": "Beijing"}
    httpx.post(f"{server}/api/v1/sites", json=site, headers=auth).raise_for_status()
    httpx.post(f"{server}/api/v1/racks", json={"site": "bj-dc1", "name": "A01"}, headers=auth)
    yield run
    asyncio.run(empty_database(database_url))


CSV = "name,kind,site,rack,position_u,serial,tags\n" + "".join(
    f"web{n:02d},server,bj-dc1,A01,{n},S{n},web\n" for n in range(1, 6)
)


def test_import_list_show_export(rackhand: Run, tmp_path: Path) -> None:
    source = tmp_path / "fleet.csv"
    source.write_text(CSV)
    dry = rackhand("devices", "import", str(source), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "5 created, 0 updated, 0 unchanged (would be written)" in dry.stdout
    assert rackhand("devices", "import", str(source)).returncode == 0

    listed = rackhand("devices", "list", "web[02-03]", "--json")
    assert [d["name"] for d in json.loads(listed.stdout)] == ["web02", "web03"]
    table = rackhand("devices", "list", "--site", "bj-dc1", "--tag", "web")
    assert table.returncode == 0
    assert "web05" in table.stdout
    assert "5 devices" in table.stderr

    shown = rackhand("devices", "show", "web01")
    assert shown.returncode == 0
    assert "S1" in shown.stdout
    assert json.loads(rackhand("devices", "show", "web01", "--json").stdout)["rack"] == "A01"

    exported = tmp_path / "out.csv"
    assert rackhand("devices", "export", "--format", "csv", "-o", str(exported)).returncode == 0
    assert exported.read_text().count("\n") == 6
    again = rackhand("devices", "import", str(exported))
    assert "0 created, 0 updated, 5 unchanged" in again.stdout


def test_errors_and_exit_codes(rackhand: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,kind,site\nweb01,server,bj-dc1\nweb02,toaster,bj-dc1\n")
    result = rackhand("devices", "import", str(bad))
    assert result.returncode == 2
    assert "row 3, kind" in result.stderr
    assert "nothing was imported" in result.stderr
    missing = rackhand("devices", "show", "nope")
    assert missing.returncode == 1
    assert "no device 'nope'" in missing.stderr
    assert rackhand("devices", "list", "web[1-").returncode == 2
    unreachable = subprocess.run(
        [RACKHAND, "devices", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"RACKHAND_URL": f"http://127.0.0.1:{free_port()}"},
    )
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr
