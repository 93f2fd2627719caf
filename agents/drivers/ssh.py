"""SSH connections to console servers, KVM switches and PDUs (asyncssh), host keys pinned.

The host key is checked during the key exchange, before the user name or password leaves:
a pinned fingerprint must match, else `HostKeyMismatch` names both; with none pinned the key
is accepted and reported to the `HostKeyListener` once the device has proven it holds it.
Failures become driver errors that name the device and say what to check.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncssh

from agents.drivers.base import (
    AuthFailed,
    Busy,
    DeviceTimeout,
    DriverError,
    HostKeyListener,
    HostKeyMismatch,
    OptionError,
    Refused,
    Unreachable,
)
from agents.protocol import Dialect, SshTarget

_FINGERPRINT = re.compile(r"(?:SHA256:)?([A-Za-z0-9+/]{43})=?")

# Of an ssh path: how to drive the box's CLI, its pinned key; a hypervisor host's toolstack
# and libvirt URI (docs/hypervisors.md).
OPTIONS = ("dialect", "host_key", "hypervisor", "uri")


def dialect(options: Mapping[str, Any]) -> str:
    """The dialect an ssh path's options name (as written: it may be none we know); a plain
    shell, the catalogue's default that no driver drives, when they name none."""
    return str(options.get("dialect") or Dialect.SHELL)


def validate(options: Mapping[str, Any]) -> None:
    """An ssh path's pin must be a fingerprint `connect` can compare (whatever the box)."""
    key = options.get("host_key")
    if key is not None and _FINGERPRINT.fullmatch(str(key).strip()) is None:
        raise OptionError(
            "options.host_key",
            "must be an OpenSSH SHA-256 fingerprint (SHA256: and 43 base64 characters), as "
            "`ssh-keygen -lf` prints it",
        )


@dataclass(frozen=True)
class SshSettings:
    """Bounds of one connection: connect (TCP, key exchange, login) and keepalives."""

    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3


def fingerprint(key: asyncssh.SSHKey) -> str:
    """The key's SHA-256 fingerprint as OpenSSH prints it ("SHA256:" + unpadded base64)."""
    return key.get_fingerprint("sha256")


def pinned(target: SshTarget, what: str) -> str | None:
    """The target's pin in canonical form; AuthFailed if it is not a SHA-256 fingerprint."""
    if target.host_key is None:
        return None
    match = _FINGERPRINT.fullmatch(target.host_key.strip())
    if match is None:
        raise AuthFailed(
            f"{what} {target.endpoint}: the pinned host key {target.host_key!r} is not an "
            "OpenSSH SHA-256 fingerprint (SHA256: and 43 base64 characters); fix the path's "
            "host key"
        )
    return f"SHA256:{match.group(1)}"


class _Client(asyncssh.SSHClient):
    """Checks the host key against the pin; remembers what was seen and how far we got."""

    def __init__(self, pin: str | None) -> None:
        self.pin = pin
        self.seen: str | None = None
        self.tcp_connected = False

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.tcp_connected = True

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.seen = fingerprint(key)
        return self.pin is None or hmac.compare_digest(self.seen, self.pin)


def _trust_nothing(
    host: str, addr: str, port: int | None
) -> tuple[list[str], list[str], list[str]]:
    """known_hosts that trusts no key, so every key goes through `_Client`'s check.

    (`known_hosts=None` would skip the check; an empty value would read ~/.ssh/known_hosts.)
    """
    return [], [], []


# AES-GCM first: with AES-NI it costs 40% less CPU than asyncssh's default ChaCha20-Poly1305
# (5,000 small echoes, client and server in one process: 1.31 s vs 2.20 s), and a console
# server's output is many small packets. The rest of asyncssh's defaults follow.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)


async def connect(
    target: SshTarget,
    *,
    username: str,
    what: str,
    settings: SshSettings,
    on_host_key: HostKeyListener | None = None,
) -> asyncssh.SSHClientConnection:
    """Log in to `target` as `username` (the dialect may add a port to the user name).

    `what` names the device in messages ("console server", "PDU").
    """
    pin = pinned(target, what)
    client = _Client(pin)
    where = f"{what} {target.endpoint}"
    key = private_key(target.password, where)
    try:
        conn = await asyncssh.connect(
            target.address,
            target.port,
            client_factory=lambda: client,
            username=username,
            password=None if key else target.password,
            known_hosts=_trust_nothing,
            preferred_auth="publickey" if key else "password,keyboard-interactive",
            client_keys=[key] if key else None,
            agent_path=None,
            gss_host=None,
            config=None,
            encryption_algs=list(CIPHERS),
            connect_timeout=settings.connect_timeout,
            keepalive_interval=settings.keepalive_interval,
            keepalive_count_max=settings.keepalive_count_max,
        )
    except Exception as exc:
        raise _translate(exc, target, username, where, client, settings) from exc
    if pin is None and on_host_key is not None and client.seen is not None:
        on_host_key(target, client.seen)
    return conn


def private_key(secret: str, where: str) -> asyncssh.SSHKey | None:
    """The secret as an OpenSSH private key when it is one (PEM text), else None: a password.
    Hypervisor hosts are usually reached with a key; boxes with a password."""
    if not secret.lstrip().startswith("-----BEGIN"):
        return None
    try:
        return asyncssh.import_private_key(secret)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise AuthFailed(
            f"{where}: the path's secret looks like a private key but cannot be read ({exc}); "
            "set an unencrypted OpenSSH or PEM private key"
        ) from exc


def _translate(
    exc: Exception,
    target: SshTarget,
    username: str,
    where: str,
    client: _Client,
    settings: SshSettings,
) -> DriverError:
    """What went wrong while connecting, for a human: the device and what to check."""
    timeout = f"{settings.connect_timeout:g} s"
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, asyncssh.HostKeyNotVerifiable) and client.seen is not None:
        return HostKeyMismatch(
            f"{where}: host key mismatch: pinned {client.pin}, shown {client.seen}; nothing "
            "was sent. If the device's key changed on purpose (reset, firmware upgrade), "
            "re-pin it, with the path's secret; otherwise something else may be answering at "
            "this address"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        login = "" if username == target.username else f" (logging in as {username})"
        what = "key" if private_key(target.password, where) else "password"
        return AuthFailed(
            f"{where} refused the {what} for {target.username}{login}; check the path's user "
            f"name and {what}"
        )
    if isinstance(exc, asyncssh.KeyExchangeFailed):
        return AuthFailed(
            f"{where}: no SSH algorithms in common ({exc.reason}); the device may need "
            "legacy algorithms enabled"
        )
    if isinstance(exc, asyncssh.DisconnectError):
        if exc.code == asyncssh.DISC_TOO_MANY_CONNECTIONS:
            return Busy(f"{where} has too many sessions open: {exc.reason}")
        if isinstance(exc, asyncssh.ConnectionLost):
            return Unreachable(
                f"{where} closed the connection during the SSH handshake ({exc.reason}); "
                "check that it is an SSH service"
            )
        return Refused(f"{where} refused the connection: {exc.reason}")
    if isinstance(exc, TimeoutError):
        if client.tcp_connected:
            return DeviceTimeout(
                f"{where} accepted the TCP connection but did not answer within {timeout} (no "
                "SSH login); check that it is an SSH service and not overloaded"
            )
        return Unreachable(
            f"{where} did not answer within {timeout}; check that it is up and reachable"
        )
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(
            f"{where} is unreachable: connection refused; check the address and port, and "
            "that its SSH service is enabled"
        )
    if isinstance(exc, socket.gaierror):
        return Unreachable(f"{where}: cannot resolve {target.address!r} ({exc.strerror})")
    if isinstance(exc, OSError):
        return Unreachable(f"{where} is unreachable: {exc.strerror or exc}")
    return DriverError(f"{where}: unexpected {type(exc).__name__} from asyncssh: {exc}")


def lost(exc: Exception, where: str) -> DriverError:
    """An error on a connection that was up: the device went away or stopped answering."""
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, TimeoutError):
        return DeviceTimeout(f"{where} stopped answering")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return Refused(f"{where} refused a session: {exc.reason}")
    if isinstance(exc, asyncssh.Error):
        return Unreachable(f"{where} dropped the connection: {exc.reason}")
    if isinstance(exc, OSError | asyncio.IncompleteReadError):
        return Unreachable(f"{where} dropped the connection: {exc}")
    return DriverError(f"{where}: unexpected {type(exc).__name__}: {exc}")
