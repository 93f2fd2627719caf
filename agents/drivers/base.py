"""What a driver promises, and the errors it may raise (retriable or not)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agents.protocol import (
    BootDevice,
    ConsolePath,
    ConsolePortPath,
    Guest,
    GuestPath,
    HealthData,
    HealthRead,
    HostPath,
    IpmiPath,
    Path,
    PduOutletPath,
    PowerAction,
    PowerState,
    SshTarget,
)


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


class NoSession(DriverError):
    """The device answered but opened no session (no free slot, a login reply we cannot read).

    Like `Unreachable` and `AuthFailed`, it proves nothing was done: another path may act.
    """


class HostKeyMismatch(AuthFailed):
    """An SSH device showed a host key other than the pinned one: nothing was sent to it."""


class NoSecret(AuthFailed):
    """The path came without a password (never set, or dropped when it was re-pointed)."""


def require_secret(path: Path | ConsolePath | HostPath) -> None:
    """Refuse a path without a password before anything connects.

    The central drops a path's secret when the path is pointed somewhere new; an empty
    password sent there would still be a login attempt at a destination nobody vouched for.
    """
    if isinstance(path, GuestPath | HostPath):
        host = path.host if isinstance(path, GuestPath) else path
        if not host.ssh.password:
            raise NoSecret(
                f"hypervisor {host.endpoint}: no secret (password or private key) set for its "
                "ssh path, so nothing was sent; PATCH that path with the secret"
            )
    elif isinstance(path, ConsolePortPath | PduOutletPath):
        box = path.server if isinstance(path, ConsolePortPath) else path.pdu
        if not box.password:
            what = "console server" if isinstance(path, ConsolePortPath) else "PDU"
            raise NoSecret(
                f"{what} {box.endpoint}: no secret set for its ssh path, so nothing was sent; "
                "PATCH that path with the secret"
            )
    elif not path.password:
        what = "BMC" if isinstance(path, IpmiPath) else "Redfish BMC"
        raise NoSecret(
            f"{what} {path.endpoint}: no secret set for this path, so nothing was sent; PATCH "
            "it with the secret"
        )


class OptionError(ValueError):
    """A path written with an option no driver honours: `field` names it, the message says
    what to use instead. Raised by the drivers' `validate`, before anything is stored."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Unsupported(DriverError):
    """The device or the path cannot do this action (e.g. `nmi` on a PDU outlet)."""


class Refused(DriverError):
    """The device answered with an error (an IPMI completion code, an HTTP error)."""


class Busy(Refused):
    """The port or console is taken on the device itself (another SOL owner, a port in use)."""


class PoweredOff(Refused):
    """The machine is off, so a cycle or reset would do nothing; nothing was sent.

    The runner answers it by powering the machine on, as Ironic's reboot and
    `ipmipower --on-if-off` do.
    """


# Failures that prove a path could not be used at all: only these move on to the next path.
# A device that answered and refused (`Refused`) is never overruled by another path.
UNUSABLE = (Unreachable, AuthFailed, NoSession, Unsupported)


class PowerDriver(Protocol):
    """Power control over one kind of path."""

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        """Do `action` (or read the state for `status`); return the state known afterwards.

        Must not retransmit a non-idempotent action blindly: a cycle sent twice cycles twice.
        """
        ...


@dataclass(frozen=True)
class OutletReading:
    """What switched outlets know: which of a device's outlets had AC before and after.

    Never the machine's own power state: an outlet that is on feeds a server that may be off.
    """

    outlets: tuple[int, ...]
    on_before: frozenset[int]  # of `outlets`
    on_after: frozenset[int]
    sent: bool  # a switching command went to the PDU (the outlets were not already as asked)


@runtime_checkable
class OutletDriver(Protocol):
    """AC switching of a device's PDU outlets: `on`, `off`, `cycle`, or a `status` read."""

    async def switch(self, path: PduOutletPath, action: PowerAction) -> OutletReading:
        """Switch every outlet of `path` together (a no-op for those already as asked)."""
        ...


class BootDriver(Protocol):
    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        """Set the next boot device (every boot if `persistent`); `bios` = stop in setup."""
        ...


class ConsoleChannel(Protocol):
    """One open console: raw bytes both ways (BIOS screens are not UTF-8)."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Output as it arrives; ends when the device side closes (or after `close`)."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def send_break(self) -> None:
        """A serial break: SSH break request, else the dialect's escape, else SOL's break."""
        ...

    async def resize(self, cols: int, rows: int) -> None:
        """Tell the far end the window size, where it has one (serial lines do not)."""
        ...

    async def close(self) -> None:
        """Leave politely (the dialect's escape, SOL deactivate), then drop the transport."""
        ...


class ConsoleDriver(Protocol):
    async def open_console(
        self, path: ConsolePath, *, cols: int = 80, rows: int = 25
    ) -> ConsoleChannel:
        """Connect and attach to the device's console; raise a DriverError saying why not."""
        ...


@runtime_checkable
class GuestDriver(Protocol):
    """Hypervisor guests: listed per host, then powered, booted and consoled per `GuestPath`."""

    async def guests(self, host: HostPath) -> list[Guest]:
        """Every domain the host knows (running or defined), as the central's sync needs."""
        ...


@runtime_checkable
class HealthDriver(Protocol):
    """Sensors, the event log and FRU inventory of a machine, from its BMC."""

    async def health(self, path: Path, read: HealthRead) -> HealthData:
        """Read what `read` names (or clear the event log, returning what it held)."""
        ...


# Called with (target, fingerprint) when an SSH device shows a key and none is pinned.
HostKeyListener = Callable[[SshTarget, str], None]
