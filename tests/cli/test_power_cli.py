"""`rackhand power` and `rackhand boot` against a real server and simulated BMCs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.cli.conftest import Run
from tests.live import admin_token
from tests.sim.fleet import PASSWORD, RunningFleet, ipmitool, launch

pytestmark = pytest.mark.xdist_group("power-e2e")


@pytest.fixture(scope="module")
def bmcs() -> Iterator[RunningFleet]:
    fleet = launch(3)
    yield fleet
    fleet.stop()


@pytest.fixture
def wired(rackhand: Run, server: str, bmcs: RunningFleet) -> Run:
    auth = {"Authorization": f"Bearer {admin_token(server)}"}
    for n in range(3):
        bmcs.control.set_power(bmcs.base + n, "off")
        bmcs.control.set_fault(bmcs.base + n, "refuse_password", False)
        name = f"web{n + 1:02d}"
        body = {"name": name, "kind": "server", "site": "bj-dc1"}
        httpx.post(f"{server}/api/v1/devices", json=body, headers=auth).raise_for_status()
        path = {"kind": "ipmi", "address": "127.0.0.1", "port": bmcs.base + n,
                "username": "admin", "secret": PASSWORD}  # fmt: skip
        httpx.post(f"{server}/api/v1/devices/{name}/paths", json=path, headers=auth)
    return rackhand


def test_power_on_then_status_as_json(wired: Run, bmcs: RunningFleet) -> None:
    done = wired("power", "on", "web[01-03]", "--ticket", "INC-3")
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout
    assert "is on" in ipmitool(bmcs.base + 2, "power", "status").stdout
    status = wired("power", "status", "--site", "bj-dc1", "--kind", "server", "--json")
    assert status.returncode == 0, status.stderr
    job = json.loads(status.stdout)
    assert [(t["device"], t["power_state"]) for t in job["tasks"]] == [
        ("web01", "on"),
        ("web02", "on"),
        ("web03", "on"),
    ]


def test_exit_codes_scripts_can_trust(wired: Run, bmcs: RunningFleet) -> None:
    bmcs.control.set_fault(bmcs.base + 1, "refuse_password", True)
    bmcs.control.set_fault(bmcs.base + 1, "drop_sessions", True)  # the poller may have logged in
    partial = wired("power", "status", "web[01-03]", "--json")
    assert partial.returncode == 1
    assert json.loads(partial.stdout)["status"] == "partial"
    refused = wired("power", "cycle", "web01")  # no terminal to ask: refuse without --yes
    assert refused.returncode == 2
    assert "without --yes" in refused.stderr
    assert wired("power", "status", "nothing[1-3]").returncode == 2
    started = wired("power", "cycle", "web01", "--yes", "--json")  # web01 is off
    assert started.returncode == 0, started.stderr
    task = json.loads(started.stdout)["tasks"][0]
    assert "the machine was off, so cycle powered it on" in task["message"]
    assert "is on" in ipmitool(bmcs.base, "power", "status").stdout
    cycled = wired("power", "cycle", "web01", "--yes")
    assert cycled.returncode == 0, cycled.stderr


def test_a_site_wide_action_skips_devices_without_a_power_path(
    wired: Run, server: str, bmcs: RunningFleet
) -> None:
    auth = {"Authorization": f"Bearer {admin_token(server)}"}
    body = {"name": "pdu-a1", "kind": "pdu", "site": "bj-dc1"}
    httpx.post(f"{server}/api/v1/devices", json=body, headers=auth).raise_for_status()
    status = wired("power", "status", "--site", "bj-dc1")
    assert status.returncode == 0, status.stderr
    assert "succeeded (1 skipped, 3 succeeded)" in status.stderr
    named = wired("power", "status", "pdu-a1,web01", "--json")
    assert named.returncode == 1  # named, it fails: no power path


def test_names_that_are_not_there_are_bad_input(rackhand: Run) -> None:
    for command, told in [
        (["power", "status", "--site", "nope"], "no site 'nope'"),
        (["power", "cycle", "--site", "bj-dc1", "--rack", "nope"], "no rack 'nope'"),  # asks
        (["power", "on", "--site", "bj-dc1", "--rack", "nope", "--yes"], "no rack 'nope'"),
        (["power", "on", "web99"], "match no device"),
        (["boot", "bios", "web99"], "no device 'web99'"),
    ]:
        result = rackhand(*command)
        assert (result.returncode, told in result.stderr) == (2, True), (command, result.stderr)


def test_boot_bios(wired: Run, bmcs: RunningFleet) -> None:
    done = wired("boot", "bios", "web03", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    shown = ipmitool(bmcs.base + 2, "chassis", "bootparam", "get", "5").stdout
    assert "Force Boot into BIOS Setup" in shown
