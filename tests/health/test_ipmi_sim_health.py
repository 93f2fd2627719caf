"""Our IPMI health reads against OpenIPMI's ipmi_sim (someone else's BMC), each compared with
what FreeIPMI's `ipmi-sensors`, `ipmi-sel` and `ipmi-fru` read from the same BMC."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.drivers.ipmi import IpmiDriver
from agents.protocol import HealthData, HealthRead, IpmiPath, SensorState
from sim.openipmi import Bmc, openipmi_fleet
from sim.openipmi_health import FAN_2, FRU, PSU1_FRU, PSU1_FRU_NAME, PSU_2, PSU_FAILURE, Threshold
from tests.freeipmi import read_fru, read_sel, read_sensors

pytestmark = [
    pytest.mark.skipif(
        shutil.which("ipmi_sim") is None or shutil.which("ipmi-sensors") is None,
        reason="OpenIPMI's ipmi_sim and FreeIPMI are needed (make peers)",
    ),
    pytest.mark.xdist_group("bmc_sim"),
]

# Our thresholds by FreeIPMI's column.
_OURS = {
    Threshold.LOWER_NON_RECOVERABLE: "lower_non_recoverable",
    Threshold.LOWER_CRITICAL: "lower_critical",
    Threshold.LOWER_NON_CRITICAL: "lower_non_critical",
    Threshold.UPPER_NON_CRITICAL: "upper_non_critical",
    Threshold.UPPER_CRITICAL: "upper_critical",
    Threshold.UPPER_NON_RECOVERABLE: "upper_non_recoverable",
}
_UNITS = {"°C": "degrees C", "V": "Volts", "RPM": "RPM"}  # ours, as FreeIPMI spells them
_FREEIPMI_STATE = {"Nominal": SensorState.OK, "Warning": SensorState.WARNING,
                   "Critical": SensorState.CRITICAL}  # fmt: skip


@pytest.fixture(scope="module")
def bmc() -> Iterator[Bmc]:
    with openipmi_fleet(1, health=True) as bmcs:
        yield bmcs[0]


def read(bmc: Bmc, what: HealthRead) -> HealthData:
    async def scenario() -> HealthData:
        driver = IpmiDriver()
        try:
            path = IpmiPath(bmc.address, bmc.username, bmc.password, port=bmc.port)
            return await driver.health(path, what)
        finally:
            await driver.close()

    return asyncio.run(scenario())


def test_sensors_read_as_freeipmi_reads_them(bmc: Bmc, tmp_path: Path) -> None:
    ours = {sensor.name: sensor for sensor in read(bmc, HealthRead.SENSORS).sensors}
    theirs = read_sensors(bmc, tmp_path)
    assert set(ours) == {sensor.name for sensor in theirs}
    for sensor in theirs:
        mine = ours[sensor.name]
        assert mine.reading == sensor.reading, sensor.name
        if sensor.reading is not None:
            assert _UNITS[mine.unit] == sensor.units, sensor.name
            expected = {_OURS[key]: value for key, value in sensor.thresholds.items()}
            assert mine.thresholds is not None
            found = {k: v for k, v in vars(mine.thresholds).items() if v is not None}
            assert found == expected, sensor.name
            assert mine.state is _FREEIPMI_STATE[sensor.state], sensor.name


def test_a_fan_failing_and_a_power_supply_failing_show_as_freeipmi_shows_them(
    bmc: Bmc, tmp_path: Path
) -> None:
    bmc.set_sensor(FAN_2, 450)  # below lower critical (500), above non-recoverable (250)
    bmc.set_sensor_state(PSU_2, PSU_FAILURE, True)
    try:
        ours = {sensor.name: sensor for sensor in read(bmc, HealthRead.SENSORS).sensors}
        theirs = {sensor.name: sensor for sensor in read_sensors(bmc, tmp_path)}
        fan = ours[FAN_2.name]
        assert (fan.reading, fan.state) == (450.0, SensorState.CRITICAL)
        assert theirs[FAN_2.name].state == "Critical"
        assert ours[PSU_2.name].state is SensorState.CRITICAL
        assert theirs[PSU_2.name].state == "Critical"
        assert any("Failure" in words for words in ours[PSU_2.name].states)
    finally:
        bmc.set_sensor(FAN_2, FAN_2.reading)
        bmc.set_sensor_state(PSU_2, PSU_FAILURE, False)


def test_the_event_log_reads_as_freeipmi_reads_it_newest_first(bmc: Bmc, tmp_path: Path) -> None:
    ours = read(bmc, HealthRead.EVENTS).events
    theirs = read_sel(bmc, tmp_path)
    assert [int(event.id) for event in ours] == [entry.record_id for entry in reversed(theirs)]
    for mine, entry in zip(reversed(ours), theirs, strict=True):
        assert (mine.sensor, mine.asserted) == (entry.name, entry.asserted)
        assert mine.sensor_type.lower() == entry.type.lower()


def test_fru_inventory_reads_as_freeipmi_reads_it(bmc: Bmc, tmp_path: Path) -> None:
    """ipmi_sim refuses Read FRU Data of more than 34 bytes with C8h; we ask for less then."""
    system, psu = read(bmc, HealthRead.INVENTORY).inventory
    assert (system.id, system.name, psu.name) == (0, "System", PSU1_FRU_NAME)
    assert system.product is not None
    assert system.board is not None
    assert system.chassis is not None
    assert FRU.product is not None
    assert FRU.board is not None
    assert FRU.chassis is not None
    assert (system.product.manufacturer, system.product.name, system.product.serial_number) == (
        FRU.product.manufacturer,
        FRU.product.product_name,
        FRU.product.serial_number,
    )
    assert system.board.serial_number == FRU.board.serial_number
    assert system.board.manufactured == "2024-03-14T09:26:00Z"
    assert system.chassis.serial_number == FRU.chassis.serial_number
    assert PSU1_FRU.product is not None
    assert psu.product is not None
    assert psu.product.serial_number == PSU1_FRU.product.serial_number
    theirs = read_fru(bmc, tmp_path)
    fields = next(iter(theirs.values()))
    assert fields["FRU Product Serial Number"] == system.product.serial_number
    assert fields["FRU Board Serial Number"] == system.board.serial_number


def test_clearing_the_log_leaves_freeipmi_nothing_and_returns_what_it_held(
    bmc: Bmc, tmp_path: Path
) -> None:
    before = read_sel(bmc, tmp_path)
    cleared = read(bmc, HealthRead.CLEAR_EVENTS).events
    assert len(cleared) == len(before)
    assert read_sel(bmc, tmp_path) == []
    assert read(bmc, HealthRead.EVENTS).events == ()
