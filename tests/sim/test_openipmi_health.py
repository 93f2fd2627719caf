"""ipmi_sim health BMCs read by FreeIPMI and by pyghmi's own blocking client: sensors, SEL, FRU,
and readings changed while the BMC runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pyghmi.ipmi import fru as pyghmi_fru  # type: ignore[import-untyped]

from sim.fru import Fru
from sim.openipmi import Bmc, EmulatorError, openipmi_fleet
from sim.openipmi_health import (
    CPU_TEMP,
    FAN_1,
    FAN_2,
    FRU,
    INLET_TEMP,
    POWER_OFF,
    POWER_UNIT,
    PSU1_FRU,
    PSU1_FRU_ID,
    PSU1_FRU_NAME,
    PSU_1,
    PSU_FAILURE,
    RAIL_12V,
    SEL_EVENTS,
    SENSORS,
    DiscreteSensor,
    SelEvent,
    Threshold,
    ThresholdSensor,
)
from tests.freeipmi import read_fru, read_sel, read_sensors
from tests.sim.fleet import ipmitool

pytestmark = pytest.mark.skipif(
    shutil.which("ipmi_sim") is None or shutil.which("ipmi-sensors") is None,
    reason="OpenIPMI's ipmi_sim and FreeIPMI are needed (make peers)",
)

# pyghmi's blocking Command in a process of its own: its sessions live in module globals.
_PYGHMI = """
import json, sys
from pyghmi.ipmi import command
from pyghmi import exceptions
address, port, user, password = sys.argv[1:]
ipmi = command.Command(bmc=address, userid=user, password=password, port=int(port))
try:
    readings = [
        {"name": r.name, "value": r.value, "units": r.units, "type": r.type, "states": r.states}
        for r in ipmi.get_sensor_data()
    ]
    events = [
        {"record_id": e["record_id"], "component": e["component"],
         "deassertion": e["deassertion"], "event": e["event"]}
        for e in ipmi.get_event_log()
    ]
    try:
        inventory = dict(ipmi.get_inventory())
        inventory_error = None
    except exceptions.IpmiException as error:
        inventory, inventory_error = {}, [str(error), error.ipmicode]
    health = ipmi.get_health()
    print(json.dumps({"readings": readings, "events": events, "inventory": inventory,
                      "inventory_error": inventory_error, "health": health["health"],
                      "bad": [b.name for b in health["badreadings"]]}, default=str))
finally:
    ipmi.ipmi_session.logout()
"""
# ipmi_sim's largest Read FRU Data answer; past it, it answers 0xC8 where IPMI says 0xCA.
_FRU_READ_LIMIT_CODE = 0xC8


@pytest.fixture
def bmc() -> Iterator[Bmc]:
    with openipmi_fleet(1, health=True) as (started,):
        yield started


def _pyghmi(bmc: Bmc) -> dict[str, Any]:
    command = [sys.executable, "-c", _PYGHMI, bmc.address, str(bmc.port)]
    result = subprocess.run(
        [*command, bmc.username, bmc.password], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_freeipmi_reads_the_sensors_as_configured(bmc: Bmc, tmp_path: Path) -> None:
    sensors = {sensor.name: sensor for sensor in read_sensors(bmc, tmp_path)}

    assert list(sensors) == [sensor.name for sensor in SENSORS]
    for configured in SENSORS:
        read = sensors[configured.name]
        assert read.type == configured.type
        assert read.state == "Nominal"
        if isinstance(configured, ThresholdSensor):
            assert read.reading == pytest.approx(configured.reading)
            assert read.units == configured.unit
            assert read.thresholds == pytest.approx(configured.thresholds)
            assert read.events == ("OK",)
        else:
            assert read.reading is None
            expected = tuple(configured.offsets[o] for o in sorted(configured.asserted))
            assert read.events == (expected or ("OK",))


def test_freeipmi_reads_the_sel_as_configured(bmc: Bmc, tmp_path: Path) -> None:
    entries = read_sel(bmc, tmp_path)

    assert [entry.record_id for entry in entries] == list(range(1, len(SEL_EVENTS) + 1))
    for entry, event in zip(entries, SEL_EVENTS, strict=True):
        assert (entry.name, entry.type) == (event.sensor.name, event.sensor.type)
        assert entry.asserted == event.asserted
        assert entry.event.startswith(_event_text(event))
    warm = entries[0].event
    assert "Sensor Reading = 36.00 C ; Threshold = 35.00 C" in warm


def test_freeipmi_reads_both_frus_as_configured(bmc: Bmc, tmp_path: Path) -> None:
    devices = read_fru(bmc, tmp_path)

    assert devices == {
        "Default FRU Device (ID 00h)": _freeipmi_fields(FRU),
        f"{PSU1_FRU_NAME} (ID {PSU1_FRU_ID:02x}h)": _freeipmi_fields(PSU1_FRU),
    }
    assert devices["Default FRU Device (ID 00h)"]["FRU Chassis Type"] == "Rack Mount Chassis"


def test_a_reading_set_while_running_shows_and_logs_each_threshold_crossed(
    bmc: Bmc, tmp_path: Path
) -> None:
    bmc.set_sensor(CPU_TEMP, 92)

    (cpu,) = (s for s in read_sensors(bmc, tmp_path) if s.name == CPU_TEMP.name)
    assert (cpu.reading, cpu.state) == (92, "Critical")
    assert cpu.events == ("At or Above (>=) Upper Critical Threshold",)
    logged = read_sel(bmc, tmp_path)[len(SEL_EVENTS) :]
    assert [(e.name, e.asserted, e.state) for e in logged] == [
        (CPU_TEMP.name, True, "Warning"),
        (CPU_TEMP.name, True, "Critical"),
    ]
    assert logged[1].event.startswith("Upper Critical - going high ; Sensor Reading = 92.00 C")

    bmc.set_sensor(CPU_TEMP, CPU_TEMP.reading)

    back = read_sel(bmc, tmp_path)[len(SEL_EVENTS) + 2 :]
    assert [(e.name, e.asserted) for e in back] == [(CPU_TEMP.name, False)] * 2


def test_a_reading_set_without_event_logs_nothing(bmc: Bmc, tmp_path: Path) -> None:
    bmc.set_sensor(FAN_1, 400, event=False)

    (fan,) = (s for s in read_sensors(bmc, tmp_path) if s.name == FAN_1.name)
    assert (fan.reading, fan.state) == (400, "Critical")
    assert len(read_sel(bmc, tmp_path)) == len(SEL_EVENTS)


def test_a_power_supply_failing_while_running(bmc: Bmc, tmp_path: Path) -> None:
    bmc.set_sensor_state(PSU_1, PSU_FAILURE, True)

    (psu,) = (s for s in read_sensors(bmc, tmp_path) if s.name == PSU_1.name)
    assert psu.state == "Critical"
    assert psu.events == ("Presence detected", "Power Supply Failure detected")
    last = read_sel(bmc, tmp_path)[-1]
    assert (last.name, last.asserted, last.event) == (
        PSU_1.name,
        True,
        "Power Supply Failure detected",
    )


def test_an_event_added_while_running_gets_the_next_record_id(bmc: Bmc, tmp_path: Path) -> None:
    record_id = bmc.add_sel_event(SelEvent(POWER_UNIT, POWER_OFF, asserted=True))

    assert record_id == len(SEL_EVENTS) + 1
    last = read_sel(bmc, tmp_path)[-1]
    assert (last.record_id, last.name, last.event) == (
        record_id,
        POWER_UNIT.name,
        "Power Off/Power Down",
    )


def test_ipmitool_agrees_on_sensors_and_sel(bmc: Bmc) -> None:
    bmc.set_sensor(FAN_2, 450)

    sdr = ipmitool(bmc.port, "sdr", "elist", suite=3, password=bmc.password)
    rows = [[cell.strip() for cell in line.split("|")] for line in sdr.stdout.splitlines()]
    assert [row[0] for row in rows] == [sensor.name for sensor in SENSORS]
    assert rows[SENSORS.index(FAN_2)][2:] == ["lcr", "29.2", "450 RPM"]
    assert rows[SENSORS.index(RAIL_12V)][4] == "12.10 Volts"
    sel = ipmitool(bmc.port, "sel", "elist", suite=3, password=bmc.password)
    lines = sel.stdout.splitlines()
    assert len(lines) == len(SEL_EVENTS) + 2  # lower non-critical, then lower critical
    assert all(FAN_2.name in line for line in lines[-2:])
    assert "Lower Critical going low" in lines[-1]


def test_the_console_reports_ipmi_sims_refusals(bmc: Bmc) -> None:
    with pytest.raises(EmulatorError, match="Unknown command"):
        bmc.emulate("no_such_command")
    with pytest.raises(EmulatorError, match="Unable to set sensor value"):
        bmc.emulate("sensor_set_value 0x20 0 99 1 0")
    with pytest.raises(ValueError, match="no reading"):
        bmc.set_sensor(FAN_1, 4810)  # not a multiple of 50 RPM


def test_each_health_bmc_of_a_fleet_has_its_own_console(tmp_path: Path) -> None:
    with openipmi_fleet(2, health=True) as (changed, untouched):
        changed.set_sensor(CPU_TEMP, 70)

        readings = [
            {s.name: s.reading for s in read_sensors(bmc, tmp_path)} for bmc in (changed, untouched)
        ]
    assert [reading[CPU_TEMP.name] for reading in readings] == [70, CPU_TEMP.reading]


def test_a_bmc_without_health_has_no_console() -> None:
    with openipmi_fleet(1) as (plain,), pytest.raises(EmulatorError, match="health"):
        plain.set_sensor(CPU_TEMP, 50)


def test_pyghmi_reads_what_freeipmi_reads(bmc: Bmc, tmp_path: Path) -> None:
    bmc.set_sensor(INLET_TEMP, 38)
    freeipmi = {sensor.name: sensor for sensor in read_sensors(bmc, tmp_path)}
    sel = read_sel(bmc, tmp_path)

    seen = _pyghmi(bmc)

    readings = {reading["name"]: reading for reading in seen["readings"]}
    assert list(readings) == list(freeipmi)
    for name, reading in readings.items():
        assert reading["type"] == freeipmi[name].type
        assert reading["value"] == pytest.approx(freeipmi[name].reading)
    assert readings[PSU_1.name]["states"] == ["Present"]
    assert [e["component"] for e in seen["events"]] == [e.name for e in sel]
    assert [not e["deassertion"] for e in seen["events"]] == [e.asserted for e in sel]
    assert seen["bad"] == [INLET_TEMP.name]  # over its upper non-critical threshold
    assert seen["health"] > 0


def test_pyghmi_cannot_read_ipmi_sims_fru_but_decodes_its_bytes(bmc: Bmc, tmp_path: Path) -> None:
    """ipmi_sim answers at most 34 bytes per Read FRU Data and refuses more with 0xC8, which
    pyghmi (backing off on 0xC9/0xCA only) takes as final: its get_inventory fails here.
    """
    seen = _pyghmi(bmc)
    assert seen["inventory_error"][1] == _FRU_READ_LIMIT_CODE

    fields = pyghmi_fru.FRU(rawdata=FRU.encode()).info
    freeipmi = read_fru(bmc, tmp_path)["Default FRU Device (ID 00h)"]
    assert fields["Board manufacturer"] == freeipmi["FRU Board Manufacturer"]
    assert fields["Product name"] == freeipmi["FRU Product Name"]
    assert fields["Serial Number"] == freeipmi["FRU Product Serial Number"]
    assert fields["Chassis serial number"] == freeipmi["FRU Chassis Serial Number"]
    made = datetime.strptime(freeipmi["FRU Board Manufacturing Date/Time"], "%m/%d/%y - %H:%M:%S")
    assert fields["Board manufacture date"] == made.strftime("%Y-%m-%dT%H:%M")


def _freeipmi_fields(fru: Fru) -> dict[str, str]:
    """What ipmi-fru shows of `fru`, by its labels (the chassis type aside)."""
    fields: dict[str, str] = {}
    if fru.chassis:
        fields |= {
            "FRU Chassis Type": "Rack Mount Chassis",
            "FRU Chassis Part Number": fru.chassis.part_number,
            "FRU Chassis Serial Number": fru.chassis.serial_number,
        }
    if fru.board:
        fields |= {
            "FRU Board Manufacturing Date/Time": fru.board.manufactured_at.strftime(
                "%m/%d/%y - %H:%M:%S"
            ),
            "FRU Board Manufacturer": fru.board.manufacturer,
            "FRU Board Product Name": fru.board.product_name,
            "FRU Board Serial Number": fru.board.serial_number,
            "FRU Board Part Number": fru.board.part_number,
        }
    if fru.product:
        fields |= {
            "FRU Product Manufacturer Name": fru.product.manufacturer,
            "FRU Product Name": fru.product.product_name,
            "FRU Product Part/Model Number": fru.product.part_number,
            "FRU Product Version": fru.product.version,
            "FRU Product Serial Number": fru.product.serial_number,
            "FRU Product Asset Tag": fru.product.asset_tag,
        }
    return {label: value for label, value in fields.items() if value}


def _event_text(event: SelEvent) -> str:
    """FreeIPMI's text for an event's offset."""
    if isinstance(event.sensor, DiscreteSensor):
        return event.sensor.offsets[event.offset]
    (threshold,) = (t for t in Threshold if t.event_offset() == event.offset)
    names = {Threshold.UPPER_NON_CRITICAL: "Upper Non-critical - going high"}
    return names[threshold]
