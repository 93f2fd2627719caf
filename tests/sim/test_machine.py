"""The machine model on a fake clock: delays, refusals, boot devices and the boot log."""

from __future__ import annotations

import pytest

from sim.machine import BootDevice, BootOverride, Control, Machine, Power, Timing


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def power(machine: Machine) -> Power:
    """Read power through a call, so that mypy does not keep an earlier read's narrowing."""
    return machine.power


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def machine(clock: FakeClock) -> Machine:
    return Machine(Timing(on_delay=0.5, cycle_off=2.0, soft_delay=3.0), clock)


def test_power_on_takes_on_delay_and_off_is_immediate(machine: Machine, clock: FakeClock) -> None:
    assert machine.control(Control.ON)
    assert power(machine) is Power.OFF
    clock.now += 0.5
    assert power(machine) is Power.ON
    assert machine.control(Control.ON)  # already on: fine, nothing happens
    assert len(machine.boot_log) == 1
    assert machine.control(Control.OFF)
    assert power(machine) is Power.OFF
    assert machine.counters["on"] == 2
    assert machine.counters["off"] == 1


def test_cycle_is_off_then_on_after_cycle_off(machine: Machine, clock: FakeClock) -> None:
    machine.press(Power.ON)
    assert machine.control(Control.CYCLE)
    assert power(machine) is Power.OFF
    clock.now += 1.9
    assert power(machine) is Power.OFF
    clock.now += 0.1
    assert power(machine) is Power.ON
    assert [(record.cause, record.at) for record in machine.boot_log] == [
        ("external", 100.0),
        ("cycle", 102.0),
    ]


def test_reset_keeps_power_on_and_boots_again(machine: Machine) -> None:
    machine.press(Power.ON)
    assert machine.control(Control.RESET)
    assert power(machine) is Power.ON
    assert [record.cause for record in machine.boot_log] == ["external", "reset"]


@pytest.mark.parametrize("action", [Control.CYCLE, Control.SOFT, Control.RESET, Control.DIAG])
def test_actions_that_need_power_are_refused_while_off(machine: Machine, action: Control) -> None:
    assert not machine.control(action)
    assert machine.counters[action.name.lower()] == 0
    assert power(machine) is Power.OFF


def test_cycle_is_refused_while_still_powering_on(machine: Machine) -> None:
    machine.control(Control.ON)
    assert not machine.control(Control.CYCLE)


def test_soft_off_shuts_down_after_the_os_delay(machine: Machine, clock: FakeClock) -> None:
    machine.press(Power.ON)
    assert machine.control(Control.SOFT)
    clock.now += 2.9
    assert power(machine) is Power.ON
    clock.now += 0.1
    assert power(machine) is Power.OFF


def test_soft_off_ignored_by_the_os_leaves_power_on(machine: Machine, clock: FakeClock) -> None:
    machine.press(Power.ON)
    machine.ignore_soft_off = True
    assert machine.control(Control.SOFT)
    clock.now += 60
    assert power(machine) is Power.ON
    assert machine.counters["soft"] == 1


def test_reset_cancels_a_pending_soft_off(machine: Machine, clock: FakeClock) -> None:
    machine.press(Power.ON)
    machine.control(Control.SOFT)
    machine.control(Control.RESET)
    clock.now += 10
    assert power(machine) is Power.ON


def test_next_boot_device_is_used_once(machine: Machine, clock: FakeClock) -> None:
    machine.set_boot(BootOverride(BootDevice.BIOS))
    machine.control(Control.ON)
    assert machine.boot.device is BootDevice.BIOS  # not booted yet
    clock.now += 0.5
    assert machine.boot == BootOverride()
    machine.control(Control.RESET)
    assert [record.device for record in machine.boot_log] == [BootDevice.BIOS, BootDevice.NONE]


def test_persistent_boot_device_is_kept(machine: Machine, clock: FakeClock) -> None:
    machine.set_boot(BootOverride(BootDevice.PXE, persistent=True))
    machine.press(Power.ON)
    machine.control(Control.CYCLE)
    clock.now += 2
    assert [record.device for record in machine.boot_log] == [BootDevice.PXE, BootDevice.PXE]
    assert machine.boot.device is BootDevice.PXE


def test_snapshot_is_json_ready_and_restores(machine: Machine, clock: FakeClock) -> None:
    machine.set_boot(BootOverride(BootDevice.DISK, persistent=True, efi=True))
    machine.press(Power.ON)
    snapshot = machine.snapshot()
    assert snapshot["power"] == "on"
    assert snapshot["boot_log"] == [{"at": 100.0, "device": BootDevice.DISK, "cause": "external"}]
    twin = Machine(clock=clock)
    twin.restore(snapshot)
    assert twin.power is Power.ON
    assert twin.boot == BootOverride(BootDevice.DISK, persistent=True, efi=True)
