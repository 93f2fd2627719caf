"""The `rackhand` command against a real `rackhand serve` process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.cli.conftest import Run
from tests.live import RACKHAND, free_port

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
        env=os.environ
        | {"RACKHAND_URL": f"http://127.0.0.1:{free_port()}", "RACKHAND_TOKEN": "rh_x"},
    )
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr
