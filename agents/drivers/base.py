"""What a driver promises, and the errors it may raise (retriable or not)."""

from __future__ import annotations

from typing import Protocol

from agents.protocol import BootDevice, Path, PowerAction, PowerState


class DriverError(Exception):
    """A failure a human can act on; `retriable` says whether trying again may help."""

    retriable = False


class Unreachable(DriverError):
    """No answer from the device (down, wrong address, filtered)."""

    retriable = True


class DeviceTimeout(DriverError):
    """The device answered once but not in time for this request."""

    retriable = True


class AuthFailed(DriverError):
    """The device refused the credentials or the cipher suite."""


class Unsupported(DriverError):
    """The device or the path cannot do this action (e.g. `nmi` on a PDU outlet)."""


class Refused(DriverError):
    """The device answered with an error (an IPMI completion code, an HTTP error)."""


class PowerDriver(Protocol):
    """Power control over one kind of path."""

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        """Do `action` (or read the state for `status`); return the state known afterwards.

        Must not retransmit a non-idempotent action blindly: a cycle sent twice cycles twice.
        """
        ...


class BootDriver(Protocol):
    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        """Set the next boot device (every boot if `persistent`); `bios` = stop in setup."""
        ...
