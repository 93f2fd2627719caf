"""IPMI power, boot and SOL over LAN (RMCP+), through pyghmi driven from one reactor thread.

pyghmi blocks and does its protocol work in whichever thread calls it; thread pools around it
stall and deadlock (docs/ipmi.md). Here one thread owns every pyghmi object and drives
them in callback style, so thousands of BMCs are in flight at once, and asyncio callers hand
it work through a queue. What each action sends is in this module; the thread, its sessions,
and how answers and silences become errors a human can act on are in `ipmi_reactor.py`; SOL
consoles, on the same thread, in `sol.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Mapping
from typing import Any, cast

from agents.drivers import pyghmi_shim as shim
from agents.drivers.base import (
    DriverError,
    OptionError,
    PoweredOff,
    Unreachable,
    Unsupported,
)
from agents.drivers.ipmi_health import SdrCache, conversation
from agents.drivers.ipmi_reactor import Conversation, Job, Key, Plan, Pool, Request, reactor
from agents.drivers.sol import SolChannel, open_sol
from agents.protocol import (
    IDEMPOTENT,
    BootDevice,
    ConsolePath,
    HealthData,
    HealthRead,
    IpmiPath,
    Path,
    PowerAction,
    PowerState,
)

_CHASSIS = 0x00
_GET_CHASSIS_STATUS = 0x01
_CHASSIS_CONTROL = 0x02
_SET_BOOT_OPTIONS = 0x08

# Chassis Control data byte (IPMI 2.0 §28.3) and its name in messages.
_CONTROL = {
    PowerAction.OFF: (0, "power down"),
    PowerAction.ON: (1, "power up"),
    PowerAction.CYCLE: (2, "power cycle"),
    PowerAction.RESET: (3, "hard reset"),
    PowerAction.NMI: (4, "NMI diagnostic interrupt"),
    PowerAction.SOFT: (5, "soft shutdown"),
}

# Boot device selector of boot flags parameter 5 (IPMI 2.0 §28.13), as pyghmi's set_bootdev.
_BOOT = {
    BootDevice.BIOS: 0x18,
    BootDevice.PXE: 0x04,
    BootDevice.DISK: 0x08,
    BootDevice.CDROM: 0x14,
    BootDevice.USB: 0x3C,
    BootDevice.DEFAULT: 0x00,
}

# Session privilege levels (IPMI 2.0 table 6-1) a path may ask for; administrator falls back to
# operator where the BMC grants no more (as pyghmi and ipmitool's default do).
PRIVILEGES = {"user": 2, "operator": 3, "administrator": shim.ADMINISTRATOR}

_STATUS = Request(_CHASSIS, _GET_CHASSIS_STATUS, b"", retry=True, name="Get Chassis Status")
_PROOF = dataclasses.replace(_STATUS, proof=True)  # skipped on a session just logged in


class IpmiDriver:
    """Power, boot and SOL consoles for `IpmiPath`s, on the process's one IPMI reactor thread.

    Sessions stay warm: one per (BMC, user, password, cipher suite), reused, kept alive by
    the reactor, closed after `idle_timeout` s unused or on any error. At most `max_logins`
    RMCP+ handshakes run at once; the rest wait their turn, like `ipmipower --fanout`.
    `request_timeout` bounds each request on an open session, `login_timeout` a login;
    `silence_timeout` is how long a BMC that has answered nothing at all gets before it is
    unreachable (pyghmi's own retransmits would wait 4-6 s): a slow BMC, one that has
    answered a login packet, keeps the whole `login_timeout`. Drivers share the thread, not
    sessions. A console has a session of its own, outside the pool and its login limit.
    """

    OPTIONS = ("cipher_suite", "privilege")  # a path's options this driver honours

    @staticmethod
    def validate(options: Mapping[str, Any]) -> None:
        """A cipher suite the shim can force and a privilege level IPMI defines."""
        suite = options.get("cipher_suite")
        if (suite or 0) not in shim.SUITES:
            raise OptionError(
                "options.cipher_suite",
                f"cipher suite {suite} is not supported; use 3 (SHA-1), 17 (SHA-256) or null to "
                "let the client negotiate",
            )
        privilege = options.get("privilege")
        if privilege is not None and privilege not in PRIVILEGES:
            raise OptionError(
                "options.privilege",
                f"privilege {privilege!r} is not an IPMI session level; use one of "
                f"{', '.join(PRIVILEGES)}",
            )

    def __init__(
        self,
        *,
        max_logins: int = 64,
        idle_timeout: float = 300.0,
        request_timeout: float = 5.0,
        login_timeout: float = 10.0,
        silence_timeout: float = 3.0,
    ) -> None:
        self._pool = Pool(max_logins, idle_timeout, request_timeout, login_timeout, silence_timeout)
        self._closed = False
        self._consoles: set[SolChannel] = set()
        self._sdrs = SdrCache()  # used on the reactor thread only

    @property
    def logins(self) -> int:
        """Logins started so far: a warm session's reuse does not count."""
        return self._pool.logins

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        """Do `action`; the state read after it (before it for nmi; `on` after cycle or reset)."""
        return cast(PowerState, await self._run(path, _power_plan(action)))

    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        await self._run(path, _boot_plan(device, persistent))

    async def health(self, path: Path, read: HealthRead) -> HealthData:
        """Sensors, the event log (or clear it) or FRU inventory, on the BMC's warm session;
        its SDR is read once and kept while unchanged (`ipmi_health.py`)."""
        talk = conversation(self._sdrs, path.endpoint, read)
        return cast(HealthData, await self._run(path, talk))

    async def open_console(
        self, path: ConsolePath, *, cols: int = 80, rows: int = 25
    ) -> SolChannel:
        """SOL (payload 1) on the BMC; `cols` and `rows` mean nothing to a serial line.

        Another client's SOL is not taken over: that is `Busy`, for a person to decide.
        """
        pool = self._pool
        key = await self._key(path)
        assert isinstance(path, IpmiPath)
        channel = await open_sol(key, path.endpoint, pool.login_timeout, pool.request_timeout)
        if self._closed:
            await channel.close()
            raise DriverError("the IPMI driver is closed")
        self._consoles = {known for known in self._consoles if known.reason is None}
        self._consoles.add(channel)
        return channel

    async def close(self) -> None:
        """Fail what is pending and close every session of this driver, its consoles too."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(channel.close() for channel in self._consoles))
        self._consoles.clear()
        loop = asyncio.get_running_loop()
        closed = loop.create_future()
        reactor().close_pool(self._pool, lambda: loop.call_soon_threadsafe(closed.set_result, None))
        await closed

    async def _run(self, path: Path, plan: Plan | Conversation) -> object:
        key = await self._key(path)
        loop = asyncio.get_running_loop()
        job = Job(
            pool=self._pool,
            key=key,
            endpoint=path.endpoint,
            plan=plan,
            loop=loop,
            future=loop.create_future(),
        )
        reactor().submit(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True  # not started yet: the reactor skips it
            raise

    async def _key(self, path: Path | ConsolePath) -> Key:
        """The session key of an IPMI path, checked, its address resolved."""
        if not isinstance(path, IpmiPath):
            raise Unsupported(f"the IPMI driver cannot use a {path.kind} path ({path.endpoint})")
        if path.cipher_suite not in shim.SUITES:
            raise Unsupported(
                f"cipher suite {path.cipher_suite} of {path.endpoint} is not supported; "
                "use 3 (SHA-1), 17 (SHA-256) or 0 to let the client negotiate"
            )
        level = PRIVILEGES.get(path.privilege)
        if level is None:
            raise Unsupported(
                f"privilege {path.privilege!r} of {path.endpoint} is not an IPMI session level; "
                f"use one of {', '.join(PRIVILEGES)}"
            )
        if self._closed:
            raise DriverError("the IPMI driver is closed")
        address = await _resolve(path)
        return (address, path.port, path.username, path.password, path.cipher_suite, level)


async def _resolve(path: IpmiPath) -> str:
    """The BMC's IP address, resolved here so a slow DNS answer never blocks the reactor."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(path.address)
        return path.address
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(path.address, path.port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise Unreachable(f"BMC {path.endpoint}: cannot resolve {path.address} ({exc})") from exc
    return str(found[0][4][0])


def _control(action: PowerAction) -> Request:
    code, name = _CONTROL[action]
    return Request(
        _CHASSIS,
        _CHASSIS_CONTROL,
        bytes((code,)),
        retry=action in IDEMPOTENT,  # a retransmitted cycle cycles twice
        name=f"Chassis Control ({name})",
        invalid_means_unsupported=True,
    )


def _power_plan(action: PowerAction) -> Plan:
    """The requests for one action; non-idempotent ones go after a proof the session works.

    On a warm session that is a status read; a session just logged in needs none (its login
    was the proof). So a silence after the command really means the BMC stopped answering
    mid-way, and only then is "it may or may not have run" the answer.
    """
    if action is PowerAction.STATUS:
        return Plan((_STATUS,), _last_state)
    if action in (PowerAction.ON, PowerAction.OFF):
        return Plan((_control(action), _STATUS), _last_state)
    if action is PowerAction.SOFT:
        return Plan((_PROOF, _control(action), _STATUS), _last_state)  # the OS may still run
    if action is PowerAction.NMI:
        return Plan((_STATUS, _control(action)), _first_state)
    # Cycle, reset: read the state first (also the session's proof). A machine that is off
    # gets nothing: BMCs refuse a cycle then (0xD5) and may take a reset without effect, so
    # the runner powers it on instead and says so.
    return Plan((dataclasses.replace(_STATUS, guard=_off_refuses(action)), _control(action)), _on)


def _off_refuses(action: PowerAction) -> Callable[[str, bytes], DriverError | None]:
    def guard(endpoint: str, status: bytes) -> DriverError | None:
        if status and _state(status) is PowerState.OFF:
            return PoweredOff(f"BMC {endpoint}: the machine is off; {action} was not sent")
        return None

    return guard


def _boot_plan(device: BootDevice, persistent: bool) -> Plan:
    """Clear the boot-flag valid-bit timer, then set parameter 5 (as pyghmi's set_bootdev)."""
    flags = 0 if device is BootDevice.DEFAULT else 0x80 | (0x40 if persistent else 0)
    return Plan(
        (
            Request(
                _CHASSIS,
                _SET_BOOT_OPTIONS,
                bytes((3, 8)),
                retry=True,
                name="Set System Boot Options (valid-bit clearing)",
            ),
            Request(
                _CHASSIS,
                _SET_BOOT_OPTIONS,
                bytes((5, flags, _BOOT[device], 0, 0, 0)),
                retry=True,
                name="Set System Boot Options (boot flags)",
            ),
        ),
        _unknown,
    )


def _state(status: bytes) -> PowerState:
    """Bit 0 of Get Chassis Status byte 1: system power is on."""
    return PowerState.ON if status[0] & 1 else PowerState.OFF


def _last_state(replies: list[bytes]) -> PowerState:
    return _state(replies[-1])


def _first_state(replies: list[bytes]) -> PowerState:
    return _state(replies[0])


def _on(replies: list[bytes]) -> PowerState:
    return PowerState.ON


def _unknown(replies: list[bytes]) -> PowerState:
    return PowerState.UNKNOWN
