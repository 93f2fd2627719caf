"""The simulated fleet against the real clients: ipmitool, FreeIPMI's ipmipower and pyghmi."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.control import ControlError
from tests.sim.fleet import PASSWORD, ROOT, RunningFleet, ipmitool, launch

pytestmark = pytest.mark.xdist_group("bmc_sim")  # one fleet per run, on one worker

BULK = 200  # ports base..base+199 are for the bulk status test; the rest go one per test


@pytest.fixture(scope="module")
def fleet() -> Iterator[RunningFleet]:
    running = launch(BULK + 20, "--processes", "2")
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def spare_ports(fleet: RunningFleet) -> Iterator[int]:
    return iter(range(fleet.base + BULK, fleet.base + BULK + 20))


@pytest.fixture
def port(spare_ports: Iterator[int]) -> int:
    """A BMC no other test touches."""
    return next(spare_ports)


def wait_for(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def pyghmi(script: str, *args: object) -> dict[str, Any]:
    """Run pyghmi in its own process (its sessions are process-global); its JSON output."""
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


@pytest.mark.parametrize("suite", [3, 17])
def test_ipmitool_power_and_bios_setup(fleet: RunningFleet, port: int, suite: int) -> None:
    control = fleet.control
    assert ipmitool(port, "power", "status", suite=suite).stdout == "Chassis Power is off\n"
    assert "Up/On" in ipmitool(port, "power", "on", suite=suite).stdout
    wait_for(lambda: control.state(port)["power"] == "on")
    assert ipmitool(port, "power", "status", suite=suite).stdout == "Chassis Power is on\n"
    assert "Cycle" in ipmitool(port, "power", "cycle", suite=suite).stdout
    wait_for(lambda: len(control.state(port)["boot_log"]) == 2)
    assert "Reset" in ipmitool(port, "power", "reset", suite=suite).stdout
    assert "Down/Off" in ipmitool(port, "power", "off", suite=suite).stdout
    state = control.state(port)
    assert state["power"] == "off"
    assert state["counters"] == {"off": 1, "on": 1, "cycle": 1, "reset": 1, "diag": 0, "soft": 0}
    assert [boot["cause"] for boot in state["boot_log"]] == ["on", "cycle", "reset"]

    assert "Set Boot Device to bios" in ipmitool(port, "chassis", "bootdev", "bios").stdout
    shown = ipmitool(port, "chassis", "bootparam", "get", "5", suite=suite).stdout
    assert "Boot Flag Valid" in shown
    assert "Force Boot into BIOS Setup" in shown


def test_ipmitool_picks_suite_17_by_itself(port: int) -> None:
    result = ipmitool(port, "-v", "power", "status", suite=None)
    assert "Using best available cipher suite 17" in result.stderr
    assert result.stdout == "Chassis Power is off\n"


def test_ipmipower_reads_200_bmcs(fleet: RunningFleet) -> None:
    for port in (fleet.base, fleet.base + 57, fleet.base + BULK - 1):
        fleet.control.set_power(port, "on")
    hosts = ",".join(f"127.0.0.1:{port}" for port in range(fleet.base, fleet.base + BULK))
    started = time.monotonic()
    result = subprocess.run(
        ["ipmipower", "-D", "LAN_2_0", "-h", hosts, "-u", "admin", "-p", PASSWORD, "--stat"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert Counter(line.split(": ")[-1] for line in result.stdout.splitlines()) == {
        "off": BULK - 3,
        "on": 3,
    }
    assert elapsed < 10


def test_ipmipower_powers_on_with_suite_17(fleet: RunningFleet, port: int) -> None:
    command = ["ipmipower", "-D", "LAN_2_0", "-I", "17", "-h", f"127.0.0.1:{port}"]
    result = subprocess.run(
        [*command, "-u", "admin", "-p", PASSWORD, "--on"], capture_output=True, text=True
    )
    assert result.stdout == "127.0.0.1: ok\n"
    wait_for(lambda: fleet.control.state(port)["power"] == "on")


PYGHMI_POWER_AND_BOOT = """
import json, sys
from pyghmi.ipmi.command import Command
command = Command("127.0.0.1", "admin", sys.argv[2], port=int(sys.argv[1]))
result = {"hash": command.ipmi_session.currhashlib().name}
result["before"] = command.get_power()["powerstate"]
result["after"] = command.set_power("off", wait=True)["powerstate"]
command.set_bootdev("setup")
result["bootdev"] = command.get_bootdev()
print(json.dumps(result))
"""


@pytest.mark.parametrize(("suites", "digest"), [([3, 17], "sha256"), ([3], "sha1")])
def test_pyghmi_logs_in_with_either_suite(
    fleet: RunningFleet, port: int, suites: list[int], digest: str
) -> None:
    fleet.control.request({"op": "set", "port": port, "suites": suites})
    fleet.control.set_power(port, "on")
    result = pyghmi(PYGHMI_POWER_AND_BOOT, port, PASSWORD)
    assert result == {
        "hash": digest,
        "before": "on",
        "after": "off",
        "bootdev": {"bootdev": "setup", "persistent": False, "uefimode": False},
    }


def test_a_suite_not_offered_is_refused(fleet: RunningFleet, port: int) -> None:
    fleet.control.request({"op": "set", "port": port, "suites": [3]})
    started = time.monotonic()
    refused = ipmitool(port, "power", "status", suite=17)
    assert refused.returncode != 0
    assert "no matching cipher suite" in refused.stderr
    assert time.monotonic() - started < 5
    assert ipmitool(port, "power", "status", suite=None).returncode == 0  # it picks 3


def test_wrong_password_fails_fast(fleet: RunningFleet, port: int) -> None:
    started = time.monotonic()
    result = ipmitool(port, "power", "status", password="not-the-password")
    assert time.monotonic() - started < 5
    assert result.returncode != 0
    assert "Unable to establish IPMI v2 / RMCP+ session" in result.stderr
    fleet.control.set_fault(port, "refuse_password", True)
    assert ipmitool(port, "power", "status").returncode != 0
    fleet.control.set_fault(port, "refuse_password", False)
    assert ipmitool(port, "power", "status").returncode == 0


def test_a_mute_bmc_times_out(fleet: RunningFleet, port: int) -> None:
    fleet.control.set_fault(port, "mute", True)
    started = time.monotonic()
    result = ipmitool(port, "power", "status", tries=1)
    assert result.returncode != 0
    assert 1 < time.monotonic() - started < 10
    fleet.control.set_fault(port, "mute", False)
    assert ipmitool(port, "power", "status").returncode == 0


PYGHMI_SLOW_CYCLE = """
import json, sys, time
from pyghmi.ipmi.command import Command
from sim.control import FleetControl
port, control = int(sys.argv[1]), FleetControl("127.0.0.1", int(sys.argv[3]))
command = Command("127.0.0.1", "admin", sys.argv[2], port=port)
command.get_power()
control.set_fault(port, "slow", 2000)  # beyond pyghmi's first retransmission (0.5-1 s)
started = time.monotonic()
reply = command.raw_command(netfn=0, command=2, data=[2])
print(json.dumps({"code": reply["code"], "seconds": time.monotonic() - started}))
control.set_fault(port, "slow", 0)
"""


def test_a_retransmitted_power_cycle_runs_once(fleet: RunningFleet, port: int) -> None:
    fleet.control.set_power(port, "on")
    result = pyghmi(PYGHMI_SLOW_CYCLE, port, PASSWORD, fleet.control.port)
    assert result["code"] == 0
    assert result["seconds"] > 1.9
    state = fleet.control.state(port)
    assert state["counters"]["cycle"] == 1
    assert state["duplicates"] >= 1


def test_soft_off_ignored_by_the_os_leaves_power_on(fleet: RunningFleet, port: int) -> None:
    control = fleet.control
    control.set_power(port, "on")
    control.set_fault(port, "ignore_soft_off", True)
    assert "Soft" in ipmitool(port, "power", "soft").stdout
    time.sleep(0.6)  # twice the OS's shutdown delay
    assert control.state(port)["power"] == "on"
    control.set_fault(port, "ignore_soft_off", False)
    assert "Soft" in ipmitool(port, "power", "soft").stdout
    wait_for(lambda: control.state(port)["power"] == "off")
    assert control.state(port)["counters"]["soft"] == 2


def test_next_boot_device_is_used_once_and_persistent_one_kept(
    fleet: RunningFleet, port: int
) -> None:
    control = fleet.control
    ipmitool(port, "chassis", "bootdev", "pxe")
    ipmitool(port, "power", "on")
    wait_for(lambda: control.state(port)["power"] == "on")
    assert "No override" in ipmitool(port, "chassis", "bootparam", "get", "5").stdout
    assert control.state(port)["boot_log"][-1]["device"] == "pxe"

    ipmitool(port, "chassis", "bootdev", "disk", "options=persistent")
    ipmitool(port, "power", "reset")
    shown = ipmitool(port, "chassis", "bootparam", "get", "5").stdout
    assert "Options apply to all future boots" in shown
    assert "Force Boot from default Hard-Drive" in shown
    state = control.state(port)
    assert [boot["device"] for boot in state["boot_log"]] == ["pxe", "disk"]
    assert (state["boot_device"], state["boot_persistent"]) == ("disk", True)


def test_control_channel_refuses_unknown_ports_and_faults(fleet: RunningFleet, port: int) -> None:
    with pytest.raises(ControlError, match="no such BMC port"):
        fleet.control.state(1)
    with pytest.raises(ControlError, match="unknown fault"):
        fleet.control.set_fault(port, "gremlins", True)


def test_a_busy_port_is_an_error(fleet: RunningFleet) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sim", "--count", "2", "--base-port", str(fleet.base)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "Address already in use" in result.stderr


def test_state_file_carries_power_and_boot_over_a_restart(tmp_path: Path) -> None:
    state_file = str(tmp_path / "state.json")
    first = launch(2, "--state", state_file)
    port = first.base + 1
    assert ipmitool(port, "chassis", "bootdev", "pxe", "options=persistent").returncode == 0
    first.control.set_power(port, "on")
    assert first.stop() == 0
    again = launch(2, "--state", state_file, base=first.base)
    try:
        state = again.control.state(port)
        assert (state["power"], state["boot_device"], state["boot_persistent"]) == (
            "on",
            "pxe",
            True,
        )
        assert again.control.state(first.base)["power"] == "off"
    finally:
        assert again.stop() == 0
