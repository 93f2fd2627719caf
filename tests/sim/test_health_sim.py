"""Sensors, SEL and FRU of the simulated fleet through real clients: ipmitool, FreeIPMI, pyghmi."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim import fru
from sim.fleet import machine_name
from tests.sim.fleet import PASSWORD, ROOT, RunningFleet, ipmitool, launch
from tests.sim.test_bmc_sim import wait_for

pytestmark = pytest.mark.xdist_group("health_sim")

PYGHMI = """
import json, sys
from pyghmi.ipmi.command import Command
command = Command("127.0.0.1", "admin", sys.argv[2], port=int(sys.argv[1]))
health = command.get_health()
sensors = {
    r.name: {"value": r.value, "units": r.units, "states": r.states, "health": r.health}
    for r in command.get_sensor_data()
}
print(json.dumps({
    "sensors": sensors,
    "health": health["health"],
    "bad": [reading.name for reading in health["badreadings"]],
    "events": [
        {"component": e.get("component"), "event": e.get("event"), "severity": e["severity"]}
        for e in command.get_event_log()
    ],
    "inventory": dict(command.get_inventory()),
}, default=str))
"""


@pytest.fixture(scope="module")
def fleet() -> Iterator[RunningFleet]:
    running = launch(6)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def spare_ports(fleet: RunningFleet) -> Iterator[int]:
    return iter(range(fleet.base, fleet.base + 6))


@pytest.fixture
def port(spare_ports: Iterator[int]) -> int:
    """A BMC no other test touches."""
    return next(spare_ports)


def powered_on(fleet: RunningFleet, port: int) -> None:
    fleet.control.set_power(port, "on")
    wait_for(lambda: fleet.control.state(port)["power"] == "on")


def freeipmi(tool: str, port: int, cache: Path, *options: str, level: str = "USER") -> str:
    """A FreeIPMI tool over LAN 2.0 (host:port, no workaround flags), its standard output."""
    target = ["-D", "LAN_2_0", "-h", f"127.0.0.1:{port}", "-u", "admin", "-p", PASSWORD]
    result = subprocess.run(
        [tool, *target, "-l", level, f"--sdr-cache-directory={cache}", *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rows(table: str) -> dict[str, list[str]]:
    """FreeIPMI's `|` table by its name column."""
    lines = [[cell.strip() for cell in line.split("|")] for line in table.splitlines()]
    return {cells[1]: cells for cells in lines[1:] if len(cells) > 2}


def test_ipmitool_reads_sensors_sel_and_fru(fleet: RunningFleet, port: int) -> None:
    powered_on(fleet, port)
    shown = ipmitool(port, "sdr", "elist").stdout
    assert "Inlet Temp       | 01h | ok  | 55.1 |" in shown
    assert "| 12.06 Volts" in shown
    assert "PSU2             | 41h | ok  | 10.2 | Presence detected" in shown
    fans = [line for line in shown.splitlines() if line.startswith("Fan")]
    assert len(fans) == 4
    assert all("RPM" in line for line in fans)
    thresholds = ipmitool(port, "sensor", "get", "Fan1").stdout
    assert "Lower Critical        : 600.000" in thresholds
    assert "Lower Non-Critical    : 1200.000" in thresholds
    log = ipmitool(port, "sel", "elist").stdout
    assert "Upper Non-critical going high | Asserted | Reading 39 > Threshold 38 degrees C" in log
    assert "Pwr Unit Status | Power off/down | Deasserted" in log
    serial = fru.identity(machine_name(port)).serial
    inventory = ipmitool(port, "fru", "print").stdout
    assert f"Product Serial        : {serial}" in inventory
    assert "Product Manufacturer  : Rackhand" in inventory
    assert "PSU1 FRU (ID 1)" in inventory


def test_freeipmi_reads_sensors_thresholds_sel_and_fru(
    fleet: RunningFleet, port: int, tmp_path: Path
) -> None:
    powered_on(fleet, port)
    table = rows(freeipmi("ipmi-sensors", port, tmp_path, "--output-sensor-thresholds"))
    assert table["Inlet Temp"][2:] == [
        "Temperature", table["Inlet Temp"][3], "C", "N/A", "3.00", "8.00", "38.00", "42.00",
        "47.00", "'OK'",
    ]  # fmt: skip
    assert table["Fan3"][5:8] == ["N/A", "600.00", "1200.00"]
    assert table["12V"][3:5] == ["12.06", "V"]
    assert table["PSU1"][-1] == "'Presence detected'"
    events = freeipmi("ipmi-sel", port, tmp_path)
    assert "Power Supply input lost (AC/DC)" in events
    assert "Sensor Reading = 39.00 C ; Threshold = 38.00 C" in events
    inventory = freeipmi("ipmi-fru", port, tmp_path)
    assert f"FRU Product Serial Number: {fru.identity(machine_name(port)).serial}" in inventory
    assert "FRU Board Manufacturer: Rackhand Power" in inventory  # the PSU's, from the locator


def test_a_failed_fan_turns_critical_and_is_logged_while_polled(
    fleet: RunningFleet, port: int, tmp_path: Path
) -> None:
    powered_on(fleet, port)
    sensors = fleet.control.set_sensor(port, "Fan2", 0)
    assert sensors["health"] == "Critical"
    table = rows(freeipmi("ipmi-sensors", port, tmp_path, "--output-sensor-state"))
    assert table["Fan2"][3:] == [
        "Critical", "0.00", "RPM", "'At or Below (<=) Lower Critical Threshold'",
    ]  # fmt: skip
    assert table["Fan1"][3] == "Nominal"
    fleet.control.set_psu(port, "PSU2", "failed")
    rpm = round(fleet.control.reset_sensors(port)["sensors"]["Fan2"]["value"])
    log = ipmitool(port, "sel", "elist").stdout.splitlines()
    assert [line.split("|", 3)[3].strip() for line in log[-6:]] == [
        "Fan Fan2 | Lower Non-critical going low  | Asserted | Reading 0 < Threshold 1200 RPM",
        "Fan Fan2 | Lower Critical going low  | Asserted | Reading 0 < Threshold 600 RPM",
        "Power Supply PSU2 | Failure detected | Asserted",
        "Power Supply PSU2 | Failure detected | Deasserted",
        f"Fan Fan2 | Lower Non-critical going low  | Deasserted | Reading {rpm} > Threshold "
        "1200 RPM",
        f"Fan Fan2 | Lower Critical going low  | Deasserted | Reading {rpm} > Threshold 600 RPM",
    ]
    assert rows(freeipmi("ipmi-sensors", port, tmp_path, "--output-sensor-state"))["Fan2"][3] == (
        "Nominal"
    )


def test_clearing_the_sel_needs_operator(fleet: RunningFleet, port: int) -> None:
    refused = subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", "admin",
         "-P", PASSWORD, "-C", "17", "-L", "USER", "sel", "clear"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Insufficient privilege level" in refused.stderr
    assert "Clearing SEL" in ipmitool(port, "sel", "clear").stdout
    assert ipmitool(port, "sel", "elist").stdout.splitlines() == [
        ipmitool(port, "sel", "elist").stdout.splitlines()[0]
    ]
    assert "Log area reset/cleared | Asserted" in ipmitool(port, "sel", "elist").stdout


def pyghmi(port: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", PYGHMI, str(port), PASSWORD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def test_pyghmi_reads_sensors_health_events_and_inventory(fleet: RunningFleet, port: int) -> None:
    powered_on(fleet, port)
    fleet.control.set_sensor(port, "Inlet Temp", 40)
    seen = pyghmi(port)
    assert seen["sensors"]["Inlet Temp"]["value"] == 40
    assert seen["sensors"]["Inlet Temp"]["states"] == ["upper non-critical threshold"]
    assert seen["sensors"]["12V"] == {"value": 12.06, "units": "V", "states": [], "health": 0}
    assert seen["sensors"]["Fan1"]["units"] == "RPM"
    assert seen["sensors"]["PSU1"]["states"] == ["Present"]
    assert seen["health"] == 1  # warning
    assert seen["bad"] == ["Inlet Temp"]
    assert {"component": "Inlet Temp", "event": "Upper non-critical", "severity": 1} in seen[
        "events"
    ]
    system = seen["inventory"]["System"]
    assert system["Serial Number"] == fru.identity(machine_name(port)).serial
    assert system["Manufacturer"] == fru.MANUFACTURER
    assert seen["inventory"]["PSU1 FRU"]["Model"] == fru.PSU_PART


def test_a_fan_reads_unavailable_while_off(fleet: RunningFleet, port: int, tmp_path: Path) -> None:
    table = rows(freeipmi("ipmi-sensors", port, tmp_path, "--output-sensor-state"))
    assert table["Fan1"][3:5] == ["N/A", "N/A"]
    assert table["Inlet Temp"][3] == "Nominal"
