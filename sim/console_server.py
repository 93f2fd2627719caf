"""A simulated console server / KVM switch: serial ports reached over SSH, as docs/dialects.md.

The SSH user name picks the port (`admin:port02`, `admin:ttyS1`, `admin:2`, or a label), or a
numbered menu does (`menu` dialect). One session holds a port; after selection the channel
carries raw bytes both ways to the port's `SerialLine`, except the dialect's escape at the
start of a line (leave, break, a doubled `~` for one `~`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import asyncssh

from sim.serial import SerialLine
from sim.ssh import Session, SshDevice


class Dialect(StrEnum):
    OPENGEAR = "opengear"
    AVOCENT_ACS = "avocent_acs"
    RARITAN_SX = "raritan_sx"
    MENU = "menu"


class Escape(StrEnum):
    LEAVE = "leave"
    BREAK = "break"
    LITERAL = "literal"  # the escape's own character, once


TILDE = {b".": Escape.LEAVE, b"b": Escape.BREAK, b"~": Escape.LITERAL}
# Each dialect: the escape prefix (recognised at line start only) and what follows it.
ESCAPES: dict[Dialect, tuple[bytes, Mapping[bytes, Escape]]] = {
    Dialect.OPENGEAR: (b"~", TILDE),
    Dialect.AVOCENT_ACS: (b"\x05c", {b".": Escape.LEAVE, b"b": Escape.BREAK}),
    Dialect.RARITAN_SX: (b"~", {b".": Escape.LEAVE, b"~": Escape.LITERAL}),
    Dialect.MENU: (b"~", {b".": Escape.LEAVE, b"~": Escape.LITERAL}),
}
MENU_PROMPT = "Type 'q' to quit, a valid option[1-{count}], or anything else to refresh :"
CHOOSER_PROMPT = "Select a port (1-{count}), or q to quit: "  # Opengear's `user:serial`


@dataclass(eq=False)
class ConsolePort:
    """One serial port of the box, the line behind it, who holds it, and counters for tests."""

    number: int
    label: str
    line: SerialLine = field(default_factory=SerialLine)
    holder: str | None = None
    sessions: int = 0  # sessions that got the port
    breaks: int = 0  # breaks sent to the line (SSH break requests and escapes)

    def state(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "label": self.label,
            "holder": self.holder,
            "sessions": self.sessions,
            "breaks": self.breaks,
        }


class EscapeReader:
    """Splits typed bytes into bytes for the line and escape actions (at line start only)."""

    def __init__(self, prefix: bytes, actions: Mapping[bytes, Escape]) -> None:
        self.prefix, self.actions = prefix, actions
        self._held = b""  # the part of the prefix typed so far
        self._line_start = True

    def read(self, data: bytes) -> list[bytes | Escape]:
        """Bytes to pass on and actions, in the order typed (bytes runs are joined)."""
        out: list[bytes | Escape] = []
        passed = bytearray()

        def act(action: Escape) -> None:
            if passed:
                out.append(bytes(passed))
                passed.clear()
            out.append(action)

        for value in data:
            byte = bytes([value])
            if self._held == self.prefix:
                self._held = b""
                action = self.actions.get(byte)
                if action is Escape.LITERAL:
                    passed += self.prefix
                elif action is not None:
                    act(action)
                    continue
                else:
                    passed += self.prefix + byte
                self._line_start = byte in b"\r\n"
                continue
            if self._held or self._line_start:
                if self.prefix.startswith(self._held + byte):
                    self._held += byte
                    continue
                passed += self._held
                self._held = b""
            passed += byte
            self._line_start = byte in b"\r\n"
        if passed:
            out.append(bytes(passed))
        return out


class ConsoleServer(SshDevice):
    """A console server with numbered ports; `wire` puts a machine's serial line on a port."""

    kind = "console_server"
    dialect: Dialect

    def __init__(
        self, name: str, dialect: str, ports: int, users: Mapping[str, str], key: asyncssh.SSHKey
    ) -> None:
        super().__init__(name, Dialect(dialect), users, key)
        self.ports = {n: ConsolePort(n, f"port{n:02d}") for n in range(1, ports + 1)}

    def wire(self, number: int, label: str, line: SerialLine) -> ConsolePort:
        """Connect port `number` to a machine's serial line, labelled with the machine's name."""
        port = self.ports[number]
        port.label, port.line = label, line
        return port

    def user_of(self, login: str) -> str:
        if self.dialect is Dialect.MENU:
            return login
        return login.partition(":")[0]

    def find(self, asked: str) -> ConsolePort | None:
        """The port a login's `:<what>` names in this dialect (numbers first, then labels)."""
        number = None
        if self.dialect is Dialect.OPENGEAR:
            if match := re.fullmatch(r"port(\d{2,})", asked):
                number = int(match[1])
            elif match := re.fullmatch(r"ttyS(\d+)", asked):
                number = int(match[1]) + 1  # Opengear counts ttyS from 0
        elif self.dialect is Dialect.AVOCENT_ACS:
            if match := re.fullmatch(r"ttyS(\d+)", asked):
                number = int(match[1])  # Cyclades heritage: ttyS1 is port 1
        elif self.dialect is Dialect.RARITAN_SX and asked.isdigit():
            number = int(asked)
        if number is not None:
            return self.ports.get(number)
        return next((port for port in self.ports.values() if port.label == asked), None)

    def session(self, login: str) -> Session:
        return _PortSession(self, login)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "ports": len(self.ports)}


class _PortSession(asyncssh.SSHServerSession[bytes]):
    """One SSH channel: select a port (from the login or the menu), then relay bytes."""

    def __init__(self, server: ConsoleServer, login: str) -> None:
        self._server = server
        self._login = login
        self._user = server.user_of(login)
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._echo = False
        self._port: ConsolePort | None = None
        self._detach: Callable[[], None] | None = None
        self._choice: bytes | None = None  # menu input so far; None when not in the menu
        prefix, actions = ESCAPES[server.dialect]
        self._escapes = EscapeReader(prefix, actions)

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, *args: Any) -> bool:
        self._echo = True  # the menu runs on a terminal; the ports' bytes are never echoed here
        return True

    def shell_requested(self) -> bool:
        return True

    def session_started(self) -> None:
        asked = self._login.partition(":")[2]
        if self._server.dialect is Dialect.MENU or (
            self._server.dialect is Dialect.OPENGEAR and asked == "serial"
        ):
            self._choice = b""
            self._show_menu()
            return
        port = self._server.find(asked)
        if port is None:
            self._refuse(f"No such port: {asked}")
        else:
            self._take(port)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._choice is not None:
            data = self._choose(data)
        if self._port is None:
            return
        for item in self._escapes.read(data):
            if item is Escape.LEAVE:
                self._leave()
                return
            if item is Escape.BREAK:
                self._send_break()
            elif isinstance(item, bytes):
                self._port.line.feed(item)

    def break_received(self, msec: int) -> bool:
        if self._port is None:
            return False
        self._send_break()
        return True

    def eof_received(self) -> bool:
        return True  # the client has nothing more to type; the port's output still flows

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()

    def _show_menu(self) -> None:
        ports = self._server.ports.values()
        listing = "".join(f"  {port.number}: {port.label}\r\n" for port in ports)
        prompt = MENU_PROMPT if self._server.dialect is Dialect.MENU else CHOOSER_PROMPT
        self._write(f"\r\n{listing}\r\n{prompt.format(count=len(ports))}".encode())

    def _choose(self, data: bytes) -> bytes:
        """Menu input; the bytes left over once a port is connected (else b"")."""
        assert self._choice is not None
        for index, value in enumerate(data):
            if value not in b"\r\n":
                self._choice += bytes([value])
                if self._echo:
                    self._write(bytes([value]))
                continue
            choice, self._choice = self._choice.strip(), b""
            if self._echo:
                self._write(b"\r\n")
            if choice == b"q":
                self._exit(0)
                return b""
            number = int(choice) if choice.isdigit() else 0
            if number not in self._server.ports:
                self._show_menu()
                continue
            self._choice = None
            port = self._server.ports[number]
            if port.holder is None:
                self._write(f"Connected to port {number}\r\n".encode())
            if self._take(port):
                rest = data[index + 1 :]
                return rest[1:] if value == ord("\r") and rest[:1] == b"\n" else rest
            return b""
        return b""

    def _take(self, port: ConsolePort) -> bool:
        if port.holder is not None:
            self._refuse(f"Port {port.number} is in use by {port.holder}")
            return False
        port.holder, self._port = self._user, port
        port.sessions += 1
        self._detach = port.line.attach(self._write)
        return True

    def _send_break(self) -> None:
        assert self._port is not None
        self._port.breaks += 1
        self._port.line.send_break()

    def _leave(self) -> None:
        self._release()
        self._exit(0)

    def _refuse(self, message: str) -> None:
        self._write(f"{message}\r\n".encode())
        self._exit(1)

    def _release(self) -> None:
        """Give the port back at once (leave, channel closed, connection dropped)."""
        if self._detach is not None:
            self._detach()
            self._detach = None
        if self._port is not None:
            self._port.holder = None
            self._port = None

    def _write(self, data: bytes) -> None:
        if self._chan is not None and not self._chan.is_closing():
            self._chan.write(data)

    def _exit(self, status: int) -> None:
        if self._chan is not None and not self._chan.is_closing():
            self._chan.exit(status)
