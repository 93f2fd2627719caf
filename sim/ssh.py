"""What the simulated SSH appliances share: password users, a host key, one session per channel.

A console server and a PDU differ only in what a session does with the bytes; this module runs
the asyncssh server on 127.0.0.1 (or the given host), checks passwords (and public keys, for
devices given authorized keys: hypervisor hosts are usually reached with one), accepts PTY and
window change requests, and hands every channel to the device's `session(login)`.
"""

from __future__ import annotations

import asyncio
import hmac
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncssh

Session = asyncssh.SSHServerSession[bytes]


def host_key(name: str, directory: Path | None = None) -> asyncssh.SSHKey:
    """An ed25519 host key; kept as `<directory>/<name>.ed25519` so restarts show the same one."""
    if directory is None:
        return asyncssh.generate_private_key("ssh-ed25519")
    path = directory / f"{name}.ed25519"
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    directory.mkdir(parents=True, exist_ok=True)
    key.write_private_key(path)
    return key


def fingerprint(key: asyncssh.SSHKey) -> str:
    """The OpenSSH SHA-256 fingerprint (`SHA256:` + unpadded base64), as `ssh-keygen -lf`."""
    return key.get_fingerprint("sha256")


def public_line(key: asyncssh.SSHKey) -> str:
    """The public key as an OpenSSH line (`ssh-ed25519 AAAA…`), for known_hosts files."""
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{algorithm} {blob}"


class SshDevice(ABC):
    """An appliance reached over SSH: its name, dialect, users and host key; `start` serves it."""

    kind = "ssh"

    def __init__(
        self, name: str, dialect: str, users: Mapping[str, str], key: asyncssh.SSHKey
    ) -> None:
        self.name = name
        self.dialect = dialect
        self.users = dict(users)
        self.key = key
        self.authorized_keys: list[asyncssh.SSHKey] = []  # public keys any of `users` may use
        self.logins = 0  # successful logins, for tests (one connection, many commands)
        self.max_sessions: int | None = None  # open sessions per connection (sshd's MaxSessions)
        self.host = ""
        self.port = 0
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    def user_of(self, login: str) -> str:
        """The account part of an SSH login name (console servers add `:port` to it)."""
        return login

    def check_password(self, login: str, password: str) -> bool:
        expected = self.users.get(self.user_of(login))
        return expected is not None and hmac.compare_digest(expected, password)

    def check_key(self, login: str, key: asyncssh.SSHKey) -> bool:
        known = self.user_of(login) in self.users
        return known and any(key.public_data == mine.public_data for mine in self.authorized_keys)

    @abstractmethod
    def session(self, login: str) -> Session:
        """A new session for a channel opened by `login` (the whole SSH user name)."""

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (0: any free port; `self.port` tells which)."""
        self._acceptor = await asyncssh.create_server(
            lambda: _Server(self),
            host,
            port,
            server_host_keys=[self.key],
            encoding=None,
            line_editor=False,
            allow_pty=True,
            x11_forwarding=False,
            agent_forwarding=False,
            keepalive_interval=0,
        )
        self.host, self.port = host, self._acceptor.get_port()

    async def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None

    def describe(self) -> dict[str, Any]:
        """Where and how to reach the device, as JSON-ready data (the wiring's device entry)."""
        user, password = next(iter(self.users.items()))
        return {
            "name": self.name,
            "kind": self.kind,
            "dialect": self.dialect,
            "address": self.host,
            "port": self.port,
            "username": user,
            "password": password,
            "host_key": self.fingerprint,
            "public_key": public_line(self.key),
        }


class _Server(asyncssh.SSHServer):
    """Password authentication against the device's users; sessions from the device."""

    def __init__(self, device: SshDevice) -> None:
        self._device = device
        self._login = ""
        self._conn: asyncssh.SSHServerConnection | None = None
        self._open: set[asyncio.Task[None]] = set()  # one per session, until its channel closes

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        self._login = username
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return self._device.check_password(username, password)

    def public_key_auth_supported(self) -> bool:
        return bool(self._device.authorized_keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return self._device.check_key(username, key)

    def auth_completed(self) -> None:
        self._device.logins += 1

    def session_requested(
        self,
    ) -> Session | tuple[asyncssh.SSHServerChannel[bytes], Session] | bool:
        """A session; beyond `max_sessions` open ones a refusal, as sshd's "open failed"."""
        limit = self._device.max_sessions
        if limit is None or self._conn is None:
            return self._device.session(self._login)
        if len(self._open) >= limit:
            return False
        chan: asyncssh.SSHServerChannel[bytes] = self._conn.create_server_channel(encoding=None)
        closing = asyncio.get_running_loop().create_task(chan.wait_closed())
        self._open.add(closing)
        closing.add_done_callback(self._open.discard)
        return chan, self._device.session(self._login)
