"""The Redfish simulator's hardware health against curl and pyghmi's Redfish Command."""

from __future__ import annotations

import asyncio

from pyghmi.redfish.command import Command  # type: ignore[import-untyped]

from sim import fru
from sim.fleet import machine_name
from sim.machine import Power
from sim.redfish import RedfishFleet
from sim.sensors import PsuState
from tests.sim.test_redfish_sim import PASSWORD, USER, curl, with_fleet

ROOT = "/redfish/v1"


def test_thermal_power_and_identity_follow_the_sensors() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        base = fleet.url(port) + ROOT
        off = (await curl(f"{base}/Chassis/1/Thermal")).body
        fan = off["Fans"][0]
        assert (fan["Name"], fan["Reading"], fan["Status"]["State"]) == (
            "Fan1",
            None,
            "StandbyOffline",
        )
        machine = fleet.machine(port)
        machine.press(Power.ON)
        machine.sensors.set_value("Fan2", 0)
        machine.sensors.set_state("PSU2", PsuState.AC_LOST)
        thermal = (await curl(f"{base}/Chassis/1/Thermal")).body
        inlet = thermal["Temperatures"][0]
        assert inlet["Name"] == "Inlet Temp"
        assert isinstance(inlet["ReadingCelsius"], float)
        assert {key: inlet[key] for key in inlet if "Threshold" in key} == {
            "LowerThresholdNonCritical": 8,
            "LowerThresholdCritical": 3,
            "UpperThresholdNonCritical": 38,
            "UpperThresholdCritical": 42,
            "UpperThresholdFatal": 47,
        }
        fan2 = thermal["Fans"][1]
        assert (fan2["Reading"], fan2["ReadingUnits"], fan2["LowerThresholdCritical"]) == (
            0,
            "RPM",
            600,
        )
        assert fan2["Status"] == {"State": "Enabled", "Health": "Critical"}
        power = (await curl(f"{base}/Chassis/1/Power")).body
        assert [psu["Status"] for psu in power["PowerSupplies"]] == [
            {"State": "Enabled", "Health": "OK"},
            {"State": "UnavailableOffline", "Health": "Critical"},
        ]
        assert power["PowerControl"][0]["PowerConsumedWatts"] > 100
        assert [rail["Name"] for rail in power["Voltages"]] == ["12V", "3.3V"]
        system = (await curl(f"{base}/Systems/1")).body
        chassis = (await curl(f"{base}/Chassis/1")).body
        serial = fru.identity(machine_name(port)).serial
        for resource in (system, chassis):
            assert resource["SerialNumber"] == serial
            assert resource["Manufacturer"] == fru.MANUFACTURER
            assert resource["PartNumber"] == fru.PART_NUMBER
            assert resource["Status"]["Health"] == "Critical"

    with_fleet(test)


def test_the_sel_as_log_entries_and_its_clear_action() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        base = fleet.url(port) + ROOT
        fleet.machine(port).sensors.set_value("Inlet Temp", 43)
        services = (await curl(f"{base}/Systems/1/LogServices")).body
        sel = services["Members"][0]["@odata.id"]
        service = (await curl(fleet.url(port) + sel)).body
        assert service["LogEntryType"] == "SEL"
        entries = (await curl(fleet.url(port) + service["Entries"]["@odata.id"])).body["Members"]
        last = entries[-1]
        assert {key: last[key] for key in ("EntryType", "Severity", "SensorType", "EntryCode")} == {
            "EntryType": "SEL",
            "Severity": "Critical",
            "SensorType": "Temperature",
            "EntryCode": "Upper Critical - going high",
        }
        assert last["Message"].startswith("Inlet Temp: Upper Critical - going high asserted")
        assert (await curl(fleet.url(port) + last["@odata.id"])).body == last
        clear = fleet.url(port) + service["Actions"]["#LogService.ClearLog"]["target"]
        assert (await curl(clear, "-X", "POST", "-d", "{}", auth=None)).status == 401
        assert (await curl(clear, "-X", "POST", "-d", "{}")).status == 204
        entries = (await curl(fleet.url(port) + service["Entries"]["@odata.id"])).body["Members"]
        assert [entry["Message"] for entry in entries] == [
            "Event Log: Log area reset/cleared asserted"
        ]

    with_fleet(test)


def test_pyghmi_reads_sensors_health_and_the_event_log() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        machine = fleet.machine(port)
        machine.press(Power.ON)
        machine.sensors.set_value("Fan2", 0)

        def use() -> None:
            command = Command("127.0.0.1", USER, PASSWORD, verifycallback=lambda _: True, port=port)
            readings = {reading.name: reading for reading in command.get_sensor_data()}
            assert (readings["Fan2"].value, readings["Fan2"].units) == (0, "RPM")
            assert readings["12V"].value == 12.06
            assert readings["CPU1 Temp"].units == "°C"
            assert command.get_health()["health"] == 2  # pyghmi's Health.Critical
            messages = [entry["message"] for entry in command.get_event_log()]
            assert "Fan2: Lower Critical - going low asserted" in messages[-1]
            system = dict(command.get_inventory())["System"]
            assert system["Serial Number"] == fru.identity(machine_name(port)).serial

        await asyncio.to_thread(use)

    with_fleet(test)
