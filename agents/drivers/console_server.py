"""Serial consoles through console servers and KVM switches over SSH (docs/dialects.md).

Most boxes pick the port from the SSH user name (`user:port02`, `user:ttyS3`, `user:3`), which
fixes the port for the whole connection, so each console gets its own connection
(docs/dialects.md). `menu` boxes log in plainly and offer a numbered list. Either way the
channel then carries raw bytes both ways, on a PTY of the viewer's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import asyncssh

from agents.drivers import ssh
from agents.drivers.base import (
    Busy,
    ConsoleChannel,
    DriverError,
    HostKeyListener,
    OptionError,
    Refused,
    Unreachable,
    Unsupported,
)
from agents.protocol import ConsolePath, ConsolePortPath, Dialect

TERM = "xterm-256color"
_HIGH_WATER = 64  # chunks queued for a slow reader before the device is asked to wait


@dataclass(frozen=True)
class PortChoice:
    """How a box picks the port: a user name per port number, or a menu after login."""

    username: Callable[[str, int], str]
    menu: bool = False


DIALECTS: dict[Dialect, PortChoice] = {
    Dialect.OPENGEAR: PortChoice(lambda user, port: f"{user}:port{port:02d}"),
    Dialect.AVOCENT_ACS: PortChoice(lambda user, port: f"{user}:ttyS{port}"),  # ttyS is 1-based
    Dialect.RARITAN_SX: PortChoice(lambda user, port: f"{user}:{port}"),
    Dialect.MENU: PortChoice(lambda user, port: user, menu=True),
}

# What a box says, on the session's first line, instead of attaching.
_BUSY = re.compile(rb"Port (\d+) is in use by ([^\r\n]*)")
_NO_PORT = re.compile(rb"No such port: ?([^\r\n]*)")
_REFUSALS = (b"Port ", b"No such port")
_MENU_PROMPT = re.compile(rb"a valid option\[1-(\d+)\][^\r\n]*:")


class _Session(asyncssh.SSHClientSession[bytes]):
    """Everything the device sends, in order, on a queue; None when the channel is gone."""

    def __init__(self) -> None:
        self.output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.exit_status: int | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.paused = False
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.output.put_nowait(data)
        if self.output.qsize() >= _HIGH_WATER and self.chan is not None:
            self.chan.pause_reading()
            self.paused = True

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        self.output.put_nowait(None)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def next(self) -> bytes | None:
        """The next chunk; None when the channel is gone."""
        chunk = await self.output.get()
        if self.paused and self.output.qsize() < _HIGH_WATER // 2 and self.chan is not None:
            self.paused = False
            self.chan.resume_reading()
        return chunk


class SshConsole:
    """One attached port: the `ConsoleChannel` of a console server session."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        chan: asyncssh.SSHClientChannel[bytes],
        session: _Session,
        where: str,
        pending: bytes,
        break_ms: int,
    ) -> None:
        self._conn = conn
        self._chan = chan
        self._session = session
        self._where = where
        self._pending = pending
        self._break_ms = break_ms
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._output()

    async def _output(self) -> AsyncIterator[bytes]:
        if self._pending:
            pending, self._pending = self._pending, b""
            yield pending
        while True:
            chunk = await self._session.next()
            if chunk is None:
                return
            yield chunk

    @property
    def exit_status(self) -> int | None:
        """What the box said when it ended the session (None until then, or if it did not)."""
        return self._session.exit_status

    async def write(self, data: bytes) -> None:
        if self._closed or self._chan.is_closing():
            raise Unreachable(f"{self._where}: the session is closed")
        self._chan.write(data)
        await self._session.writable.wait()

    async def send_break(self) -> None:
        """An SSH break request; the box turns it into a serial break on the port."""
        if not self._chan.is_closing():
            self._chan.send_break(self._break_ms)

    async def resize(self, cols: int, rows: int) -> None:
        if not self._chan.is_closing():
            self._chan.change_terminal_size(cols, rows)

    async def close(self) -> None:
        """Drop the channel and the connection.

        No leave escape: it needs a fresh line, and the Enter that starts one would reach the
        machine and could run whatever half-typed line is on its console.
        """
        if self._closed:
            return
        self._closed = True
        self._chan.close()
        self._conn.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._conn.wait_closed()


class ConsoleServerDriver:
    """`ConsoleDriver` for `ConsolePortPath`s on the dialects of docs/dialects.md.

    `settle` is how long a fresh session is watched for the box's refusal (port busy, no such
    port) before it is handed over; an idle serial line says nothing, so it is a short wait.
    """

    def __init__(
        self,
        *,
        on_host_key: HostKeyListener | None = None,
        settings: ssh.SshSettings | None = None,
        settle: float = 0.3,
        break_ms: int = 300,
    ) -> None:
        self._on_host_key = on_host_key
        self._settings = settings or ssh.SshSettings()
        self._settle = settle
        self._break_ms = break_ms

    @staticmethod
    def validate(options: Mapping[str, Any]) -> None:
        """The options of the ssh path of a box whose ports this driver opens: a dialect it
        speaks (docs/dialects.md)."""
        dialect = ssh.dialect(options)
        if dialect not in DIALECTS:
            raise OptionError(
                "options.dialect",
                f"dialect {dialect!r} cannot open console ports; use one of "
                f"{', '.join(DIALECTS)} (docs/dialects.md)",
            )

    async def open_console(
        self, path: ConsolePath, *, cols: int = 80, rows: int = 25
    ) -> ConsoleChannel:
        if not isinstance(path, ConsolePortPath):
            raise Unsupported(
                f"the console server driver cannot use a {path.kind} path ({path.endpoint})"
            )
        server = path.server
        choice = DIALECTS.get(server.dialect)
        if choice is None:
            raise Unsupported(
                f"console server {server.endpoint}: no console-server driver for dialect "
                f"'{server.dialect}' (known: {', '.join(DIALECTS)})"
            )
        if path.port < 1:
            raise Refused(f"console server {server.endpoint}: ports are numbered from 1")
        where = f"console server {server.endpoint}"
        conn = await ssh.connect(
            server,
            username=choice.username(server.username, path.port),
            what="console server",
            settings=self._settings,
            on_host_key=self._on_host_key,
        )
        try:
            chan, opened = await conn.create_session(
                _Session, term_type=TERM, term_size=(cols, rows), encoding=None
            )
            session = cast(_Session, opened)
            if choice.menu:
                pending = await self._choose(chan, session, path.port, where)
            else:
                pending = await self._attached(session, path.port, where)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, Exception):
                raise ssh.lost(exc, where) from exc
            raise
        return SshConsole(conn, chan, session, f"{where} port {path.port}", pending,
                          self._break_ms)  # fmt: skip

    async def _attached(self, session: _Session, port: int, where: str, seen: bytes = b"") -> bytes:
        """The port's first bytes, once they cannot be the box's refusal (busy, no such port)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            line = seen.lstrip(b"\r\n")
            first, newline, _ = line.partition(b"\n")
            if newline and (_BUSY.match(first) or _NO_PORT.match(first)):
                raise _refusal(seen, session.exit_status, port, where)
            if line and (newline or not _maybe_refusal(line)):
                return seen
            # Silence is an idle line; the start of a refusal gets time to finish its line.
            wait = self._settings.connect_timeout if line else self._settle
            try:
                async with asyncio.timeout_at(start + wait):
                    chunk = await session.next()
            except TimeoutError:
                return seen
            if chunk is None:
                raise _refusal(seen, session.exit_status, port, where)
            seen += chunk

    async def _choose(
        self, chan: asyncssh.SSHClientChannel[bytes], session: _Session, port: int, where: str
    ) -> bytes:
        """Menu boxes: wait for the list's prompt, answer the port number, wait to connect."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.connect_timeout
        seen = b""

        async def more() -> None:
            nonlocal seen
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await session.next()
            except TimeoutError:
                raise Unreachable(
                    f"{where}: the port menu did not finish within "
                    f"{self._settings.connect_timeout:g} s; last seen {_text(seen[-80:])!r}"
                ) from None
            if chunk is None:
                raise _refusal(seen, session.exit_status, port, where)
            seen += chunk

        while (prompt := _MENU_PROMPT.search(seen)) is None:
            await more()
        ports = int(prompt.group(1))
        if port > ports:
            raise Refused(f"{where}: no port {port}: the menu offers ports 1-{ports}")
        chan.write(f"{port}\r".encode())
        seen = seen[prompt.end() :]
        connected = re.compile(rb"(?:^|\n)[^\n]*Connected to port %d\r?\n" % port)
        while (match := connected.search(seen)) is None:
            refusal = _BUSY.search(seen) or _NO_PORT.search(seen)
            if refusal and seen[refusal.end() : refusal.end() + 1] in (b"\r", b"\n"):
                raise _refusal(refusal.group(0) + b"\r\n", session.exit_status, port, where)
            if _MENU_PROMPT.search(seen):
                raise Refused(f"{where}: the menu did not take port {port}; it asked again")
            await more()
        return await self._attached(session, port, where, seen[match.end() :])


def _maybe_refusal(line: bytes) -> bool:
    return any(prefix.startswith(line[: len(prefix)]) for prefix in _REFUSALS)


def _refusal(seen: bytes, status: int | None, port: int, where: str) -> DriverError:
    """Busy or Refused from what the box said before it closed the session."""
    first = seen.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
    if busy := _BUSY.match(first):
        return Busy(
            f"{where}: port {port} is in use by {_text(busy.group(2))}; wait for that "
            "session to end or ask them to leave it"
        )
    if _NO_PORT.match(first):
        return Refused(
            f"{where} has no port {port} ({_text(first)}); check the port number on the path"
        )
    said = f": {_text(first)!r}" if first else ""
    code = f" (exit status {status})" if status is not None else ""
    return Refused(f"{where} closed the session to port {port} at once{code}{said}")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")
