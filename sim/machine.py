"""The simulated server behind one BMC: power with delays, boot device, and what it did."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import IntEnum, StrEnum
from typing import Any

from sim.firmware import BootTarget, Firmware
from sim.fru import Identity, identity
from sim.sensors import Sensors
from sim.serial import SerialLine

Clock = Callable[[], float]


class Power(StrEnum):
    """What Get Chassis Status reports."""

    ON = "on"
    OFF = "off"


class Control(IntEnum):
    """Chassis Control actions (IPMI 2.0 §28.3, table 28-4)."""

    OFF = 0
    ON = 1
    CYCLE = 2
    RESET = 3
    DIAG = 4
    SOFT = 5


class BootDevice(StrEnum):
    """Boot device override selectors (IPMI 2.0 §28.13, boot flags parameter 5, data 2)."""

    NONE = "none"
    PXE = "pxe"
    DISK = "disk"
    SAFE = "safe"
    DIAG = "diag"
    CDROM = "cdrom"
    BIOS = "bios"
    REMOTE_FLOPPY = "remote_floppy"
    REMOTE_CDROM = "remote_cdrom"
    REMOTE_MEDIA = "remote_media"
    REMOTE_DISK = "remote_disk"
    FLOPPY = "floppy"


@dataclass(frozen=True, slots=True)
class BootRecord:
    """One boot: when, from what override ("none" = the firmware's own order), and why."""

    at: float
    device: BootDevice
    cause: str


@dataclass(frozen=True)
class Timing:
    """Delays of a machine, in seconds."""

    on_delay: float = 0.5
    cycle_off: float = 1.0
    soft_delay: float = 1.0
    post_seconds: float = 1.5  # the firmware's POST screen, before it boots on


@dataclass(slots=True)
class _Pending:
    at: float
    boot: bool  # True: the machine comes on and boots; False: the OS finishes its shutdown
    cause: str


@dataclass(frozen=True, slots=True)
class BootOverride:
    """The boot device override the BIOS honours, and whether it outlives the next boot."""

    device: BootDevice = BootDevice.NONE
    persistent: bool = False
    efi: bool = False


FIRMWARE_TARGETS = {BootDevice.BIOS: BootTarget.SETUP, BootDevice.PXE: BootTarget.PXE}


class Machine:
    """A server's power, boot state, serial console, sensors and identity.

    Scheduled changes happen when the state is next read, and also on time when an asyncio
    loop is running (so that the console shows a boot as it happens).
    """

    def __init__(
        self, timing: Timing | None = None, clock: Clock = time.monotonic, name: str = "sim"
    ) -> None:
        self.timing = timing or Timing()
        self.clock = clock
        self.name = name
        self.serial = SerialLine()
        self.firmware = Firmware(self.serial, name, self.timing.post_seconds)
        self.identity: Identity = identity(name)
        self._sensors = Sensors(name)
        self.ignore_soft_off = False
        self.counters = {action.name.lower(): 0 for action in Control}
        self._boot = BootOverride()
        self._boot_log: list[BootRecord] = []
        self._on = False
        self._pending: _Pending | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.ac = True  # fed by at least one PDU outlet (always, when no PDU is wired)

    @property
    def power(self) -> Power:
        self._advance()
        return Power.ON if self._on else Power.OFF

    @property
    def sensors(self) -> Sensors:
        """The sensors and event log, with any due power change applied first."""
        self._advance()
        return self._sensors

    @property
    def boot(self) -> BootOverride:
        self._advance()
        return self._boot

    @property
    def boot_log(self) -> list[BootRecord]:
        self._advance()
        return list(self._boot_log)

    def control(self, action: Control) -> bool:
        """Run a chassis control; False when the machine is not in a state to do it."""
        now = self.clock()
        self._advance()
        if not self.ac:
            return False
        if action is Control.OFF:
            self._set_on(False)
            self._schedule(None)
            self.firmware.power_off()
        elif action is Control.ON:
            if not self._on and self._pending is None:
                self._schedule(_Pending(now + self.timing.on_delay, boot=True, cause="on"))
        elif not self._on:
            return False  # 0xD5 on real BMCs: cannot cycle, reset, interrupt or shut down "off"
        elif action is Control.CYCLE:
            self._set_on(False)
            self.firmware.power_off()
            self._schedule(_Pending(now + self.timing.cycle_off, boot=True, cause="cycle"))
        elif action is Control.RESET:
            self._schedule(None)
            self._start(now, "reset")
        elif action is Control.SOFT and not self.ignore_soft_off:
            self._schedule(_Pending(now + self.timing.soft_delay, boot=False, cause="soft"))
        self.counters[action.name.lower()] += 1
        return True

    def press(self, power: Power) -> None:
        """Set power at once, from outside IPMI (a hand on the button, a test's setup)."""
        self._advance()
        was_on = self._on
        self._set_on(power is Power.ON)
        self._schedule(None)
        if self._on and not was_on:
            self._start(self.clock(), "external")
        elif not self._on:
            self.firmware.power_off()

    def set_ac(self, fed: bool) -> None:
        """AC from the PDU outlets: lost = off at once; back = boots (power on after AC loss)."""
        self._advance()
        if fed == self.ac:
            return
        self.ac = fed
        if not fed:
            self._set_on(False)
            self._schedule(None)
            self.firmware.power_off()
        elif not self._on and self._pending is None:
            self._schedule(_Pending(self.clock() + self.timing.on_delay, boot=True, cause="ac"))

    def set_boot(self, override: BootOverride) -> None:
        self._advance()
        self._boot = override

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-ready data."""
        boot = self.boot
        return {
            "power": str(self.power),
            "boot_device": str(boot.device),
            "boot_persistent": boot.persistent,
            "boot_efi": boot.efi,
            "ignore_soft_off": self.ignore_soft_off,
            "counters": dict(self.counters),
            "boot_log": [asdict(record) for record in self._boot_log],
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Take back power and boot settings from a snapshot (counters and log start afresh)."""
        self._set_on(saved["power"] == Power.ON)
        self._schedule(None)
        if self._on:
            self.firmware.resume()
        else:
            self.firmware.power_off()
        self._boot = BootOverride(
            BootDevice(saved["boot_device"]),
            bool(saved["boot_persistent"]),
            bool(saved["boot_efi"]),
        )

    def _set_on(self, on: bool) -> None:
        self._on = on
        self._sensors.power_changed(on)

    def _schedule(self, pending: _Pending | None) -> None:
        """Make `pending` the next change; with a loop running it also happens on time."""
        self._pending = pending
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if pending is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(max(0.0, pending.at - self.clock()), self._due, pending)

    def _due(self, pending: _Pending) -> None:
        self._timer = None
        if self._pending is pending:
            self._apply(pending)

    def _advance(self) -> None:
        pending = self._pending
        if pending is not None and pending.at <= self.clock():
            self._apply(pending)

    def _apply(self, pending: _Pending) -> None:
        self._schedule(None)
        self._set_on(pending.boot)
        if pending.boot:
            self._start(pending.at, pending.cause)
        else:
            self.firmware.shutdown()

    def _start(self, at: float, cause: str) -> None:
        device = self._boot.device
        self._boot_log.append(BootRecord(at, device, cause))
        if not self._boot.persistent:
            self._boot = BootOverride()
        self.firmware.power_on(FIRMWARE_TARGETS.get(device, BootTarget.DISK))
