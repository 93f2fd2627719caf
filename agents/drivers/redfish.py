"""Redfish power and boot over HTTPS, through pyghmi's Redfish client on a bounded thread pool.

pyghmi's Redfish client is plain blocking `http.client` with a new TLS connection per request
and no state shared between clients (docs/ipmi.md), so, unlike its IPMI side, threads
are safe here. One client is kept per (URL, user, password, fingerprint) so its X-Auth-Token
session is reused, and used by one thread at a time. Every TLS connection is pinned to the
path's certificate fingerprint; without one, nothing is trusted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import re
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pyghmi import exceptions as pyghmi_errors  # type: ignore[import-untyped]
from pyghmi.redfish import command as redfish  # type: ignore[import-untyped]

from agents.drivers.base import (
    AuthFailed,
    DeviceTimeout,
    DriverError,
    OptionError,
    PoweredOff,
    Refused,
    Unreachable,
    Unsupported,
)
from agents.drivers.redfish_health import work as health_work
from agents.protocol import (
    BootDevice,
    HealthData,
    HealthRead,
    Path,
    PowerAction,
    PowerState,
    RedfishPath,
)

T = TypeVar("T")
Work = Callable[[Any, str], T]  # (pyghmi Command, "Redfish BMC <url>"), in a pool thread

# ResetType of each action (pyghmi's set_power word where it has one).
_RESET = {
    PowerAction.ON: "On",
    PowerAction.OFF: "ForceOff",
    PowerAction.SOFT: "GracefulShutdown",
    PowerAction.RESET: "ForceRestart",
    PowerAction.CYCLE: "PowerCycle",
    PowerAction.NMI: "Nmi",
}
_SET_POWER = {PowerAction.ON: "on", PowerAction.OFF: "off", PowerAction.SOFT: "shutdown",
              PowerAction.RESET: "reset"}  # fmt: skip

# BootSourceOverrideTarget of each device, as pyghmi's generic set_bootdev maps its words
# (setup, network, hd, optical, usb, default).
_TARGET = {
    BootDevice.BIOS: "BiosSetup",
    BootDevice.PXE: "Pxe",
    BootDevice.DISK: "Hdd",
    BootDevice.CDROM: "Cd",
    BootDevice.USB: "Usb",
    BootDevice.DEFAULT: "None",
}

# Redfish Base registry messages that mean "not this action/value" and "not these credentials".
_UNSUPPORTED = re.compile(r"ActionNotSupported|ActionParameterNotSupported|ValueNotInList")
_DENIED = re.compile(r"NoValidSession|AccessDenied|InsufficientPrivilege|Unauthorized")


class _Command(redfish.Command):  # type: ignore[misc]
    """pyghmi's Command with our socket timeout instead of its fixed 60 s.

    pyghmi makes its connection first thing in `__init__` and every later request copies that
    connection's `mytimeout`, so setting it as the connection is assigned bounds every request,
    the login's included.
    """

    def __init__(self, timeout: float, **kwargs: Any) -> None:
        self._timeout = timeout
        super().__init__(**kwargs)

    @property
    def wc(self) -> Any:
        return self._wc

    @wc.setter
    def wc(self, connection: Any) -> None:
        connection.mytimeout = self._timeout
        self._wc = connection


@dataclass
class _Client:
    """The cached Command of one key; the lock keeps one thread at a time on it."""

    command: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class RedfishDriver:
    """Power and boot for `RedfishPath`s.

    `request_timeout` bounds each HTTPS request (connect, TLS, answer); `call_timeout` bounds
    a whole action, which takes a few requests (several more on the first use of a BMC, which
    logs in). A call that runs out returns at once; its thread ends at its next socket timeout.
    """

    OPTIONS = ("tls_fingerprint",)  # a path's options this driver honours

    def __init__(
        self, *, workers: int = 32, request_timeout: float = 5.0, call_timeout: float = 30.0
    ) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="redfish")
        self._clients: dict[tuple[str, str, str, str | None], _Client] = {}
        self._request_timeout = request_timeout
        self._call_timeout = call_timeout
        self._closed = False

    @staticmethod
    def validate(options: Mapping[str, Any]) -> None:
        """A pinned fingerprint must be a SHA-256 the certificate check can compare."""
        pin = options.get("tls_fingerprint")
        if pin is not None and _pin_digits(str(pin)) is None:
            raise OptionError(
                "options.tls_fingerprint",
                "must be the certificate's SHA-256: 64 hex digits, colons allowed",
            )

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        """Do `action`; the state read after it (before it for nmi; `on` after cycle or reset)."""
        return await self._run(path, _power_work(action), mutating=action is not PowerAction.STATUS)

    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        await self._run(path, _boot_work(device, persistent), mutating=True)

    async def health(self, path: Path, read: HealthRead) -> HealthData:
        """Sensors, the event log (or clear it) or inventory, read resource by resource
        (`redfish_health.py`)."""
        return await self._run(path, health_work(read), mutating=read is HealthRead.CLEAR_EVENTS)

    async def close(self) -> None:
        """Stop taking work and wait for the pool's threads (each bounded by its timeouts)."""
        if self._closed:
            return
        self._closed = True
        self._clients.clear()
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def _run(self, path: Path, work: Work[T], *, mutating: bool) -> T:
        if not isinstance(path, RedfishPath):
            raise Unsupported(f"the Redfish driver cannot use a {path.kind} path ({path.endpoint})")
        if self._closed:
            raise DriverError("the Redfish driver is closed")
        key = (path.url, path.username, path.password, path.fingerprint)
        client = self._clients.setdefault(key, _Client())
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._pool, self._call, client, path, work, mutating)
        try:
            return await asyncio.wait_for(call, self._call_timeout)
        except TimeoutError:
            raise DeviceTimeout(
                f"Redfish BMC {path.url}: no complete answer within {self._call_timeout:g} s"
                + (_MAYBE_RAN if mutating else "")
            ) from None

    def _call(self, client: _Client, path: RedfishPath, work: Work[T], mutating: bool) -> T:
        """In a pool thread: log in if needed, then work; a client that failed is dropped."""
        with client.lock:
            try:
                if client.command is None:
                    client.command = self._login(path)
            except Exception as exc:
                raise _translate(exc, path, self._request_timeout, acting=False) from exc
            try:
                return work(client.command, f"Redfish BMC {path.url}")
            except Exception as exc:
                error = _translate(exc, path, self._request_timeout, acting=mutating)
                if not isinstance(error, Refused | Unsupported):
                    client.command = None  # a broken session or BMC: log in afresh next time
                raise error from exc

    def _login(self, path: RedfishPath) -> Any:
        parts = urlsplit(path.url)
        if parts.scheme != "https" or not parts.hostname:
            raise Unsupported(
                f"Redfish BMC {path.url}: not an https://host[:port] URL; fix the path's address"
            )
        return _Command(
            self._request_timeout,
            bmc=parts.hostname,
            userid=path.username,
            password=path.password,
            verifycallback=_pinning(path),
            port=parts.port or 443,
        )


_MAYBE_RAN = "; it may or may not have run: check (the power state, the log) before repeating it"


def _pin_digits(fingerprint: str) -> str | None:
    """A pinned SHA-256 as 64 lower-case hex digits; None if it is not one."""
    digits = re.sub(r"[\s:]", "", fingerprint).lower()
    return digits if re.fullmatch(r"[0-9a-f]{64}", digits) else None


def _pinning(path: RedfishPath) -> Callable[[bytes], bool]:
    """pyghmi's verifycallback: the certificate's SHA-256 must be the pinned one.

    It raises AuthFailed itself, through pyghmi, so the message can show both fingerprints.
    """
    expected = _pin_digits(path.fingerprint or "") or ""
    if path.fingerprint is not None and not expected:
        raise AuthFailed(
            f"Redfish BMC {path.url}: the pinned fingerprint {path.fingerprint!r} is not a "
            "SHA-256 (64 hex digits); fix options.tls_fingerprint on the path"
        )

    def verify(certificate: bytes) -> bool:
        seen = hashlib.sha256(certificate).hexdigest()
        if not expected:
            raise AuthFailed(
                f"Redfish BMC {path.url}: no certificate fingerprint is pinned for this path, so "
                f"its certificate is not trusted; it presents SHA-256 {_colons(seen)}. Check that "
                "this is the BMC's (e.g. on its console), then set options.tls_fingerprint on "
                "the path to it, with the path's secret in the same PATCH"
            )
        if not hmac.compare_digest(seen, expected):
            raise AuthFailed(
                f"Redfish BMC {path.url}: certificate fingerprint mismatch: expected SHA-256 "
                f"{_colons(expected)}, seen {_colons(seen)}. If the BMC's certificate was "
                "replaced on purpose, update options.tls_fingerprint on the path, with its "
                "secret; otherwise something else may be answering at this address"
            )
        return True

    return verify


def _colons(digest: str) -> str:
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()


def _translate(exc: Exception, path: RedfishPath, timeout: float, *, acting: bool) -> DriverError:
    """What went wrong, for a human: the BMC's URL and what to do about it."""
    where = f"Redfish BMC {path.url}"
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, TimeoutError):
        if acting:
            return DeviceTimeout(f"{where}: no answer within {timeout:g} s" + _MAYBE_RAN)
        return Unreachable(
            f"{where}: no answer within {timeout:g} s; check that the BMC is up and reachable"
        )
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(
            f"{where}: connection refused; check the address and port, and that the BMC's "
            "web service (Redfish) is enabled"
        )
    if isinstance(exc, socket.gaierror):
        return Unreachable(f"{where}: cannot resolve the host name ({exc})")
    if isinstance(exc, OSError | http.client.HTTPException):
        return Unreachable(f"{where}: {type(exc).__name__}: {exc}; check the BMC and the network")
    if isinstance(exc, pyghmi_errors.RedfishError):
        message = f"{where} refused: {exc} ({exc.msgid})"
        if _DENIED.search(exc.msgid or ""):
            return AuthFailed(f"{message}; check the path's user name and password")
        if _UNSUPPORTED.search(exc.msgid or ""):
            return Unsupported(message)
        return Refused(message)
    if isinstance(exc, pyghmi_errors.PyghmiException):
        if "Access Denied" in str(exc):
            return AuthFailed(
                f"{where}: user {path.username!r} was refused; check the path's user name and "
                "password"
            )
        return Refused(f"{where}: {exc}")
    return DriverError(f"{where}: unexpected {type(exc).__name__} from pyghmi: {exc}")


def _state(command: Any) -> PowerState:
    """PowerState of the system: transitional states (PoweringOn...) are `unknown`."""
    word = command.get_power()["powerstate"]
    return {"on": PowerState.ON, "off": PowerState.OFF}.get(word, PowerState.UNKNOWN)


def _allowed(command: Any, reset_type: str, where: str) -> None:
    """Unsupported unless the system advertises the Reset action with this ResetType."""
    if not command.powerurl:
        raise Unsupported(f"{where}: the system has no ComputerSystem.Reset action")
    action = command.sysinfo.get("Actions", {}).get("#ComputerSystem.Reset", {})
    allowed = action.get("ResetType@Redfish.AllowableValues")
    if allowed is not None and reset_type not in allowed:
        raise Unsupported(
            f"{where}: the BMC does not allow ResetType {reset_type} "
            f"(it allows {', '.join(allowed) or 'none'})"
        )


def _power_work(action: PowerAction) -> Work[PowerState]:
    def work(command: Any, where: str) -> PowerState:
        if action is PowerAction.STATUS:
            return _state(command)
        reset_type = _RESET[action]
        _allowed(command, reset_type, where)
        if action in (PowerAction.CYCLE, PowerAction.RESET) and _state(command) is PowerState.OFF:
            raise PoweredOff(f"{where}: the machine is off; {action} was not sent")
        before = _state(command) if action is PowerAction.NMI else None
        if action in _SET_POWER:
            command.set_power(_SET_POWER[action])
        else:  # pyghmi's set_power knows no PowerCycle or Nmi: the same POST, by hand
            command._do_web_request(command.powerurl, {"ResetType": reset_type})
        if before is not None:
            return before
        if action in (PowerAction.CYCLE, PowerAction.RESET):
            return PowerState.ON
        return _state(command)

    return work


def _boot_work(device: BootDevice, persistent: bool) -> Work[None]:
    """PATCH Boot directly: pyghmi's set_bootdev also forces BootSourceOverrideMode to UEFI,
    which would turn a legacy-BIOS server's next boot into a UEFI one."""
    target = _TARGET[device]
    if device is BootDevice.DEFAULT:
        boot = {"BootSourceOverrideEnabled": "Disabled"}
    else:
        enabled = "Continuous" if persistent else "Once"
        boot = {"BootSourceOverrideEnabled": enabled, "BootSourceOverrideTarget": target}

    def work(command: Any, where: str) -> None:
        allowed = command.sysinfo.get("Boot", {}).get(
            "BootSourceOverrideTarget@Redfish.AllowableValues"
        )
        if allowed is not None and target not in allowed:
            raise Unsupported(
                f"{where}: cannot boot from {target} (it allows {', '.join(allowed)})"
            )
        command._do_web_request(command.sysurl, {"Boot": boot}, method="PATCH", etag="*")

    return work
