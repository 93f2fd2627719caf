"""FreeIPMI's readers (`ipmi-sensors`, `ipmi-sel`, `ipmi-fru`) run against a BMC and parsed:
someone else's client, to compare what ours reads with.

LAN 2.0 to `HOST:PORT` (FreeIPMI takes the port after the host name, as `ipmipower` does in
the benchmarks), the SDR cache in the caller's folder, comma-separated output without headers.
`-W opensesspriv`: without it ipmi_sim refuses every FreeIPMI session ("privilege level cannot
be obtained for this user").
"""

from __future__ import annotations

import csv
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sim.openipmi import Bmc
from sim.openipmi_health import Threshold

_TIMEOUT = 60.0
_NOT_AVAILABLE = "N/A"
# ipmi-sensors' threshold columns, in its order (`--output-sensor-thresholds`).
_THRESHOLD_COLUMNS = (
    Threshold.LOWER_NON_RECOVERABLE,
    Threshold.LOWER_CRITICAL,
    Threshold.LOWER_NON_CRITICAL,
    Threshold.UPPER_NON_CRITICAL,
    Threshold.UPPER_CRITICAL,
    Threshold.UPPER_NON_RECOVERABLE,
)
_ASSERTION = "Assertion Event"
_FRU_DEVICE = "FRU Inventory Device: "


@dataclass(frozen=True)
class Sensor:
    """One line of `ipmi-sensors`: `state` is Nominal, Warning, Critical or N/A; `events` the
    quoted event texts ('OK', 'Presence detected', 'At or Above (>=) Upper Critical Threshold').
    """

    record_id: int
    name: str
    type: str
    state: str
    reading: float | None
    units: str | None
    thresholds: dict[Threshold, float]
    events: tuple[str, ...]


@dataclass(frozen=True)
class SelEntry:
    """One system event of `ipmi-sel -v`; `event` is its text, reading and threshold included."""

    record_id: int
    name: str
    type: str
    state: str
    asserted: bool
    event: str


def read_sensors(bmc: Bmc, cache: Path) -> list[Sensor]:
    """Every sensor of the BMC's SDR with its reading, thresholds and state."""
    rows = _run(
        "ipmi-sensors",
        bmc,
        cache,
        "--output-sensor-thresholds",
        "--output-sensor-state",
        "--non-abbreviated-units",
    )
    sensors = []
    for record_id, name, kind, state, reading, units, *thresholds, events in rows:
        sensors.append(
            Sensor(
                int(record_id),
                name,
                kind,
                state,
                None if reading == _NOT_AVAILABLE else float(reading),
                None if units == _NOT_AVAILABLE else units,
                {
                    threshold: float(value)
                    for threshold, value in zip(_THRESHOLD_COLUMNS, thresholds, strict=True)
                    if value != _NOT_AVAILABLE
                },
                tuple(re.findall(r"'([^']*)'", events)),
            )
        )
    return sensors


def read_sel(bmc: Bmc, cache: Path) -> list[SelEntry]:
    """The System Event Log, oldest first (dates and times left out: see `sim.openipmi_health`)."""
    rows = _run("ipmi-sel", bmc, cache, "--verbose", "--output-event-state")
    return [
        SelEntry(int(record_id), name, kind, state, direction == _ASSERTION, event)
        for record_id, _date, _time, name, kind, state, direction, event in rows
    ]


def read_fru(bmc: Bmc, cache: Path) -> dict[str, dict[str, str]]:
    """Every FRU device FreeIPMI finds (FRU 0, then those of the SDR's FRU device locators), by
    its heading, e.g. "Default FRU Device (ID 00h)": its fields by FreeIPMI's labels, e.g.
    "FRU Board Manufacturer". Empty fields are left out.
    """
    devices: dict[str, dict[str, str]] = {}
    fields: dict[str, str] = {}
    for line in _output("ipmi-fru", bmc, cache).splitlines():
        label, colon, value = line.strip().partition(": ")
        if line.startswith(_FRU_DEVICE):
            fields = devices[line.removeprefix(_FRU_DEVICE)] = {}
        elif colon:
            fields[label] = value
    return devices


def _run(program: str, bmc: Bmc, cache: Path, *options: str) -> list[list[str]]:
    output = _output(
        program, bmc, cache, "--comma-separated-output", "--no-header-output", *options
    )
    return list(csv.reader(output.splitlines()))


def _output(program: str, bmc: Bmc, cache: Path, *options: str) -> str:
    target = ["-D", "LAN_2_0", "-h", f"{bmc.address}:{bmc.port}", "-u", bmc.username]
    session = ["-p", bmc.password, "-W", "opensesspriv", "--quiet-cache"]
    command = [program, *target, *session, f"--sdr-cache-directory={cache}", *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout
