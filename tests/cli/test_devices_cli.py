"""The `rackhand` command against a real `rackhand serve` process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import Run, runner
from tests.live import RACKHAND, admin_token, free_port

# One worker runs the module: its tests share one `rackhand serve` per database.
pytestmark = pytest.mark.xdist_group("cli-serve")

CSV = "name,kind,site,rack,position_u,serial,tags\n" + "".join(
    f"web{n:02d},server,bj-dc1,A01,{n},S{n},web\n" for n in range(1, 6)
)


def test_import_list_show_export(rackhand: Run, tmp_path: Path) -> None:
    source = tmp_path / "fleet.csv"
    source.write_text(CSV)
    dry = rackhand("devices", "import", str(source), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would create web01" in dry.stdout
    assert "would create 5, update 0; 0 unchanged (dry run, nothing written)" in dry.stdout
    real = rackhand("devices", "import", str(source))
    assert real.returncode == 0
    assert "created web01" in real.stdout
    assert real.stdout.endswith("5 created, 0 updated, 0 unchanged\n")

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
    assert again.stdout == "0 created, 0 updated, 5 unchanged (nothing written)\n"


def test_errors_and_exit_codes(rackhand: Run, server: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "name,kind,site\nweb01,server,bj-dc1\nweb02,toaster,bj-dc1\nweb03,server,nowhere\n"
        "web01,server,bj-dc1\n"  # the server checks names first, sites last
    )
    result = rackhand("devices", "import", str(bad))
    assert result.returncode == 2
    assert "nothing was imported; 3 problem(s)" in result.stderr
    rows = [line.split(":")[0].strip() for line in result.stderr.splitlines()[1:]]
    assert rows == ["row 3, kind", "row 4, site", "row 5, name"]  # in row order, each once
    missing = rackhand("devices", "show", "nope")
    assert missing.returncode == 2
    assert "no device 'nope'" in missing.stderr
    assert rackhand("devices", "list", "web[1-").returncode == 2
    for filters in (["--site", "nope"], ["--site", "bj-dc1", "--rack", "nope"]):
        unknown = rackhand("devices", "list", *filters)
        assert unknown.returncode == 2
        assert "no site 'nope'" in unknown.stderr or "no rack 'nope'" in unknown.stderr
    wrong_url = runner(f"{server}/elsewhere", tmp_path)  # a 404 for another reason: a failure
    lost = wrong_url("devices", "list", "--site", "bj-dc1", RACKHAND_TOKEN=admin_token(server))
    assert lost.returncode == 1
    assert "Not Found" in lost.stderr
    unreachable = subprocess.run(
        [RACKHAND, "devices", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ
        | {"RACKHAND_URL": f"http://ops:pw-9f8e@127.0.0.1:{free_port()}", "RACKHAND_TOKEN": "rh_x"},
    )
    assert unreachable.returncode == 1
    assert "cannot reach http://***@127.0.0.1:" in unreachable.stderr
    assert "pw-9f8e" not in unreachable.stderr  # a password in the URL is never printed


def test_list_shows_power_and_whole_lines_through_a_pipe(
    rackhand: Run, server: str, tmp_path: Path
) -> None:
    source = tmp_path / "long.csv"
    tags = "backed-up,cold-aisle,first-floor,monitored,prod,web"
    source.write_text(
        "name,kind,site,vendor,model,tags\n"
        f'web01,server,bj-dc1,Lenovo,ThinkSystem SR630 V3 with a long model name,"{tags}"\n'
    )
    assert rackhand("devices", "import", str(source)).returncode == 0
    piped = runner(server, tmp_path)("devices", "list", RACKHAND_TOKEN=admin_token(server))
    assert piped.returncode == 0, piped.stderr
    header, row = piped.stdout.splitlines()
    assert header.split() == ["NAME", "KIND", "SITE", "RACK", "U", "STATUS", "POWER", "MODEL",
                              "TAGS"]  # fmt: skip
    assert "active  unknown  Lenovo ThinkSystem SR630 V3 with a long model name" in row
    assert row.rstrip().endswith(tags)
    assert len(row.rstrip()) > 80
