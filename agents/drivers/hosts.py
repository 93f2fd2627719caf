"""Hypervisor hosts over SSH: one connection per host, reused by every command and console.

A poll of 200 guests on one host is 200 commands on one connection (each an SSH channel, a
few milliseconds), not 200 logins. A connection that dropped is opened again at the next
command; one unused for `idle` seconds is closed. Commands run as argument lists, quoted for
the host's shell, so a domain name or URI never becomes shell syntax.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import asyncssh

from agents.drivers import ssh
from agents.drivers.base import DeviceTimeout, HostKeyListener, Unreachable
from agents.drivers.console_server import TERM, _Session
from agents.protocol import HostPath

_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8)  # before asking again for a channel the host refused


@dataclass(frozen=True)
class Output:
    """What one command left: its exit status and its output, decoded (UTF-8, replaced)."""

    status: int
    stdout: str
    stderr: str

    @property
    def said(self) -> str:
        """The command's own words on failure, for a human (stderr, else stdout)."""
        return (self.stderr.strip() or self.stdout.strip())[-500:]


@dataclass
class _Host:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one login at a time
    conn: asyncssh.SSHClientConnection | None = None
    key: tuple[str, str, str, str | None] | None = None
    idle: asyncio.TimerHandle | None = None
    users: int = 0
    sessions: asyncio.Semaphore = field(default_factory=asyncio.Semaphore)  # of `run`s


class Hosts:
    """The SSH connections to hypervisor hosts, one per host, shared by the guest drivers."""

    def __init__(
        self,
        *,
        on_host_key: HostKeyListener | None = None,
        settings: ssh.SshSettings | None = None,
        command_timeout: float = 30.0,
        idle: float = 60.0,
        sessions: int = 6,
    ) -> None:
        self._on_host_key = on_host_key
        self._settings = settings or ssh.SshSettings()
        self._command_timeout = command_timeout
        self._idle = idle
        self._sessions = sessions
        self._hosts: dict[str, _Host] = {}

    async def run(
        self,
        host: HostPath,
        argv: Sequence[str],
        *,
        within: float | None = None,
        stdin: str | None = None,
    ) -> Output:
        """Run `argv` on the host, `stdin` as its input; its exit status and output (a failure
        is the caller's to read: `virsh` and `xl` say what went wrong on stderr).

        At most `sessions` commands run at once per host, the rest waiting their turn:
        OpenSSH refuses a connection's sessions beyond its MaxSessions (10 by default, and
        those of commands that just ended count for a moment)."""
        where = f"hypervisor {host.endpoint}"
        wait = within or self._command_timeout
        async with self._state(host).sessions:
            return await self._run(host, argv, wait, stdin, where)

    async def _run(
        self, host: HostPath, argv: Sequence[str], wait: float, stdin: str | None, where: str
    ) -> Output:
        conn = await self.connection(host)
        try:
            async with asyncio.timeout(wait):
                done = await _exec(conn, shlex.join(argv), stdin)
        except TimeoutError:
            raise DeviceTimeout(
                f"{where}: `{shlex.join(argv)}` did not finish within {wait:g} s"
            ) from None
        except asyncssh.ChannelOpenError as exc:
            raise ssh.lost(exc, where) from exc  # the connection is fine: others use it
        except Exception as exc:
            self.drop(host)
            raise ssh.lost(exc, where) from exc
        finally:
            self.release(host)
        status = done.exit_status if done.exit_status is not None else 255
        return Output(status, str(done.stdout or ""), str(done.stderr or ""))

    def _state(self, host: HostPath) -> _Host:
        state = self._hosts.get(host.endpoint)
        if state is None:
            state = self._hosts[host.endpoint] = _Host(sessions=asyncio.Semaphore(self._sessions))
        return state

    async def connection(self, host: HostPath) -> asyncssh.SSHClientConnection:
        """The host's open connection (logged in now if none is); `release` it after use."""
        state = self._state(host)
        key = (host.ssh.address, host.ssh.username, host.ssh.password, host.ssh.host_key)
        async with state.lock:
            if state.idle is not None:
                state.idle.cancel()
                state.idle = None
            if state.conn is not None and (state.key != key or state.conn.is_closed()):
                state.conn.close()  # re-pointed, re-keyed or dropped: log in afresh
                state.conn = None
            if state.conn is None:
                state.conn = await ssh.connect(
                    host.ssh,
                    username=host.ssh.username,
                    what="hypervisor",
                    settings=self._settings,
                    on_host_key=self._on_host_key,
                )
                state.key = key
            state.users += 1
            return state.conn

    async def console(
        self, host: HostPath, argv: Sequence[str], *, cols: int, rows: int
    ) -> HostConsole:
        """Run `argv` (`virsh console`, `xl console`) on a PTY of the viewer's size, on the
        host's shared connection; the console holds the connection until it closes."""
        where = f"hypervisor {host.endpoint}"
        conn = await self.connection(host)
        try:
            chan, opened = await conn.create_session(
                _Session, shlex.join(argv), term_type=TERM, term_size=(cols, rows), encoding=None
            )
        except BaseException as exc:
            self.release(host)
            if isinstance(exc, Exception):
                raise ssh.lost(exc, where) from exc
            raise
        return HostConsole(self, host, chan, cast(_Session, opened), where)

    def release(self, host: HostPath) -> None:
        """One user of the host's connection is done (a command, or a console that ended); the
        last one arms the idle close."""
        state = self._hosts.get(host.endpoint)
        if state is None:
            return
        state.users = max(0, state.users - 1)
        if state.users == 0 and state.conn is not None and state.idle is None:
            state.idle = asyncio.get_running_loop().call_later(self._idle, self.drop, host)

    def drop(self, host: HostPath) -> None:
        """Close the host's connection (the next command opens a new one)."""
        state = self._hosts.get(host.endpoint)
        if state is None or state.conn is None:
            return
        if state.idle is not None:
            state.idle.cancel()
            state.idle = None
        state.conn.close()
        state.conn = None

    async def close(self) -> None:
        conns = [state.conn for state in self._hosts.values() if state.conn is not None]
        for state in self._hosts.values():
            if state.idle is not None:
                state.idle.cancel()
            state.conn = None
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await conn.wait_closed()


async def _exec(
    conn: asyncssh.SSHClientConnection, command: str, stdin: str | None
) -> asyncssh.SSHCompletedProcess:
    """Run `command` on a channel of its own. A channel the host refused never ran it, so it
    is asked for again after a pause: sshd frees a session a moment after its command ends,
    and open consoles hold sessions of their own."""
    for pause in _PAUSES:
        try:
            return await conn.run(command, input=stdin, check=False, encoding="utf-8",
                                  errors="replace")  # fmt: skip
        except asyncssh.ChannelOpenError:
            await asyncio.sleep(pause)
    return await conn.run(command, input=stdin, check=False, encoding="utf-8", errors="replace")


class HostConsole:
    """A `ConsoleChannel` on a channel of the host's shared connection: closing it closes the
    channel only (the connection serves the host's other guests)."""

    def __init__(
        self,
        hosts: Hosts,
        host: HostPath,
        chan: asyncssh.SSHClientChannel[bytes],
        session: _Session,
        where: str,
    ) -> None:
        self._hosts = hosts
        self._host = host
        self._chan = chan
        self._session = session
        self._where = where
        self._closed = False
        self.pending = b""  # output a flavour read while attaching, handed out first

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._output()

    async def _output(self) -> AsyncIterator[bytes]:
        if self.pending:
            pending, self.pending = self.pending, b""
            yield pending
        while (chunk := await self._session.next()) is not None:
            yield chunk

    async def read(self) -> bytes | None:
        """The next chunk while attaching (None: the command ended)."""
        return await self._session.next()

    @property
    def exit_status(self) -> int | None:
        return self._session.exit_status

    async def write(self, data: bytes) -> None:
        if self._closed or self._chan.is_closing():
            raise Unreachable(f"{self._where}: the console session is closed")
        self._chan.write(data)
        await self._session.writable.wait()

    async def send_break(self) -> None:
        if not self._chan.is_closing():
            self._chan.send_break(300)

    async def resize(self, cols: int, rows: int) -> None:
        if not self._chan.is_closing():
            self._chan.change_terminal_size(cols, rows)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._chan.close()
        self._hosts.release(self._host)
