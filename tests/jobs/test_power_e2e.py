"""Power and boot end to end: API → job → built-in agent → pyghmi → simulated or OpenIPMI BMCs.

Every change is checked from outside Rackhand: with `ipmitool`, and with the simulator's own
record of what its machine did (a cycle must run exactly once).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from sim.openipmi import openipmi_fleet
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, site
from tests.sim.fleet import PASSWORD, RunningFleet, ipmitool, launch, redfish_sim

COUNT = 12
pytestmark = pytest.mark.xdist_group("power-e2e")


@pytest.fixture(scope="module")
def bmcs() -> Iterator[RunningFleet]:
    fleet = launch(COUNT)
    yield fleet
    fleet.stop()


@pytest.fixture
def api(settings: Settings, bmcs: RunningFleet) -> Iterator[TestClient]:
    """The real app (real drivers); srv01..srv12 wired to the simulated BMCs."""
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet), raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        for n in range(COUNT):
            port = bmcs.base + n
            bmcs.control.set_power(port, "off")
            for fault in ("mute", "refuse_password"):
                bmcs.control.set_fault(port, fault, False)
            device(client, f"srv{n + 1:02d}")
            path(client, f"srv{n + 1:02d}", kind="ipmi", address="127.0.0.1", port=port,
                 username="admin", secret=PASSWORD)  # fmt: skip
        yield client


def _finished(client: TestClient, job_id: str, until: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + until
    while True:
        job: dict[str, Any] = ok(client.get(f"jobs/{job_id}"))
        if job["status"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_bulk_cycle_runs_once_on_every_bmc(api: TestClient, bmcs: RunningFleet) -> None:
    ports = [bmcs.base + n for n in range(10)]
    for port in ports:
        bmcs.control.set_power(port, "on")
    before = [bmcs.control.state(port)["counters"].get("cycle", 0) for port in ports]
    job = ok(api.post("power", json={"select": "srv[01-10]", "action": "cycle"}), 202)
    done = _finished(api, job["id"])
    assert done["status"] == "succeeded", done["tasks"]
    assert {(t["path"], t["power_state"]) for t in done["tasks"]} == {("ipmi", "on")}
    after = [bmcs.control.state(port)["counters"].get("cycle", 0) for port in ports]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1] * 10
    deadline = time.monotonic() + 5  # the machine is off for a moment, then starts again
    while "is on" not in ipmitool(ports[0], "power", "status").stdout:
        assert time.monotonic() < deadline, "the cycled machine did not come back on"
        time.sleep(0.1)


def test_on_off_and_status_agree_with_ipmitool(api: TestClient, bmcs: RunningFleet) -> None:
    port = bmcs.base + 10
    answer = ok(api.post("devices/srv11/power", json={"action": "on", "ticket": "INC-5"}))
    assert (answer["status"], answer["power_state"]) == ("succeeded", "on")
    assert "Chassis Power is on" in ipmitool(port, "power", "status").stdout
    ok(api.post("devices/srv11/power", json={"action": "off"}))
    assert "Chassis Power is off" in ipmitool(port, "power", "status").stdout
    status = ok(api.post("devices/srv11/power", json={"action": "status"}))
    assert status["power_state"] == "off"


def test_boot_to_bios_setup_on_the_next_boot(api: TestClient, bmcs: RunningFleet) -> None:
    port = bmcs.base + 11
    answer = ok(api.post("devices/srv12/boot", json={"device": "bios"}))
    assert answer["status"] == "succeeded"
    assert "Force Boot into BIOS Setup" in ipmitool(port, "chassis", "bootparam", "get", "5").stdout
    ok(api.post("devices/srv12/power", json={"action": "on"}))
    deadline = time.monotonic() + 5
    while not bmcs.control.state(port)["boot_log"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bmcs.control.state(port)["boot_log"][-1]["device"] == "bios"


def test_faults_are_reported_per_device(api: TestClient, bmcs: RunningFleet) -> None:
    bmcs.control.set_fault(bmcs.base + 1, "refuse_password", True)
    bmcs.control.set_fault(bmcs.base + 2, "mute", True)
    started = time.monotonic()
    job = ok(
        api.post("power", json={"select": "srv[01-03]", "action": "status", "timeout": 20}), 202
    )
    done = _finished(api, job["id"])
    assert time.monotonic() - started < 30
    tasks = {t["device"]: t for t in done["tasks"]}
    assert done["status"] == "partial"
    assert tasks["srv01"]["status"] == "succeeded"
    assert "rejected the user or password" in tasks["srv02"]["message"]
    assert tasks["srv03"]["status"] in ("failed", "timeout")
    assert "did not answer" in tasks["srv03"]["message"]
    events = ok(api.get("audit", params={"type": "power.*", "limit": 50}))
    assert len([e for e in events["items"] if e["job_id"] == done["id"]]) == 6


def test_power_through_a_bmc_we_did_not_write(api: TestClient, tmp_path: Path) -> None:
    with openipmi_fleet(1, user="admin", password="openipmi-pw", workdir=tmp_path) as found:
        bmc = found[0]
        device(api, "legacy01")
        path(api, "legacy01", kind="ipmi", address="127.0.0.1", port=bmc.port,
             username="admin", secret="openipmi-pw", options={"cipher_suite": 3})  # fmt: skip
        answer = ok(api.post("devices/legacy01/power", json={"action": "on"}))
        assert (answer["status"], answer["power_state"]) == ("succeeded", "on")
        assert bmc.power() == "on"
        ok(api.post("devices/legacy01/power", json={"action": "off"}))
        assert bmc.power() == "off"


def test_the_paths_privilege_reaches_the_bmc(api: TestClient, tmp_path: Path) -> None:
    """The catalogue's `privilege` is the session's level: `user` may read but not switch."""
    with openipmi_fleet(1, user="admin", password="openipmi-pw", workdir=tmp_path) as found:
        bmc = found[0]
        device(api, "ro01")
        created = path(api, "ro01", kind="ipmi", address="127.0.0.1", port=bmc.port,
                       username="admin", secret="openipmi-pw",
                       options={"cipher_suite": 3, "privilege": "user"})  # fmt: skip
        read = ok(api.post("devices/ro01/power", json={"action": "status"}))
        assert (read["status"], read["power_state"]) == ("succeeded", "off")
        refused = ok(api.post("devices/ro01/power", json={"action": "on"}))
        assert refused["status"] == "failed"
        assert "insufficient privilege level (0xD4)" in refused["message"]
        assert bmc.power() == "off"
        options = {"cipher_suite": 3, "privilege": "operator"}
        ok(api.patch(f"devices/ro01/paths/{created['id']}", json={"options": options}))
        answer = ok(api.post("devices/ro01/power", json={"action": "on"}))
        assert (answer["status"], answer["power_state"]) == ("succeeded", "on")
        assert bmc.power() == "on"


@pytest.fixture
def redfish_bmc() -> Iterator[tuple[str, str]]:
    with redfish_sim() as bmc:
        yield bmc


def test_dead_bmc_falls_back_to_redfish_and_says_so(
    api: TestClient, redfish_bmc: tuple[str, str]
) -> None:
    url, fingerprint = redfish_bmc
    device(api, "web90")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # holds a port, never answers
        silent.bind(("127.0.0.1", 0))
        dead = silent.getsockname()[1]
        path(api, "web90", kind="ipmi", priority=10, address="127.0.0.1", port=dead,
             username="admin", secret="x")  # fmt: skip
        path(api, "web90", kind="redfish", priority=20, address=url, username="admin",
             secret="redfish-pw", options={"tls_fingerprint": fingerprint})  # fmt: skip
        answer = ok(api.post("devices/web90/power", json={"action": "on", "timeout": 60}))
        assert (answer["status"], answer["path"], answer["power_state"]) == (
            "succeeded",
            "redfish",
            "on",
        )
        assert "did not answer" in answer["message"]  # the IPMI failure is kept in the message
        assert f"via redfish {url}" in answer["message"]
        system = httpx.get(
            f"{url}/redfish/v1/Systems/1", auth=("admin", "redfish-pw"), verify=False
        )
        assert system.json()["PowerState"] == "On"
