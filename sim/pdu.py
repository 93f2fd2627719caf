"""A simulated switched PDU: outlets feeding machines, switched from an SSH CLI (docs/dialects.md).

Dialects `raritan_px` (`show outlets`, `power outlets N on|off|cycle` with a `[y/n]`
confirmation) and `apc` (`olStatus`, `olOn`, `olOff`, `olReboot`, `E000: Success`). A machine
runs while any outlet feeding it is on (dual power supplies); a cycle keeps the outlet off for
the PDU's cycle delay.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import asyncssh

from sim.machine import Machine
from sim.sensors import PSUS
from sim.ssh import Session, SshDevice

CYCLE_DELAY = 2.0


class PduDialect(StrEnum):
    RARITAN_PX = "raritan_px"
    APC = "apc"


class Feed:
    """The outlets feeding one machine's power supplies; any one on keeps it running."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.outlets: list[Outlet] = []

    def update(self) -> None:
        """Power supply i hangs on outlet i (all on the one outlet of a single-fed machine)."""
        self.machine.set_ac(any(outlet.on for outlet in self.outlets))
        sensors = self.machine.sensors
        for index in range(len(PSUS)) if self.outlets else ():
            sensors.set_input(index, self.outlets[index % len(self.outlets)].on)


@dataclass(eq=False)
class Outlet:
    """One switched outlet, what it feeds, and a pending cycle's timer."""

    number: int
    name: str
    on: bool = True
    feed: Feed | None = None
    switched: int = 0  # on/off/cycle actions done, for tests
    cycling: asyncio.TimerHandle | None = field(default=None, repr=False)

    def state(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "state": "On" if self.on else "Off",
            "cycling": self.cycling is not None,
            "switched": self.switched,
        }


class BadOutlet(ValueError):
    """An outlet list names an outlet the PDU does not have (the offending text)."""


class Pdu(SshDevice):
    """A PDU with numbered outlets, all on at start; `wire` puts a machine's supply on one."""

    kind = "pdu"
    dialect: PduDialect

    def __init__(
        self,
        name: str,
        dialect: str,
        outlets: int,
        users: Mapping[str, str],
        key: asyncssh.SSHKey,
        cycle_delay: float = CYCLE_DELAY,
    ) -> None:
        super().__init__(name, PduDialect(dialect), users, key)
        self.cycle_delay = cycle_delay
        self.outlets = {n: Outlet(n, f"Outlet {n}") for n in range(1, outlets + 1)}

    def wire(self, number: int, feed: Feed, name: str) -> Outlet:
        """Plug one of the machine's power supplies into outlet `number`, named after it."""
        outlet = self.outlets[number]
        outlet.name, outlet.feed = name, feed
        feed.outlets.append(outlet)
        feed.update()
        return outlet

    def select(self, spec: str) -> list[Outlet]:
        """Outlets of `all`, `5`, `5,6` or `5-6` (BadOutlet naming the first wrong part)."""
        if spec.lower() == "all":
            return list(self.outlets.values())
        chosen: list[Outlet] = []
        for part in spec.split(","):
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not match:
                raise BadOutlet(part)
            first, last = int(match[1]), int(match[2] or match[1])
            for number in range(first, last + 1):
                if number not in self.outlets:
                    raise BadOutlet(str(number))
                chosen.append(self.outlets[number])
        return chosen

    def switch(self, outlets: list[Outlet], action: str) -> None:
        """`on`, `off` or `cycle` (off now, on again after `cycle_delay`)."""
        for outlet in outlets:
            outlet.switched += 1
            if outlet.cycling is not None:
                outlet.cycling.cancel()
                outlet.cycling = None
            self._set(outlet, action == "on")
            if action == "cycle":
                loop = asyncio.get_running_loop()
                outlet.cycling = loop.call_later(self.cycle_delay, self._cycled, outlet)

    def _cycled(self, outlet: Outlet) -> None:
        outlet.cycling = None
        self._set(outlet, True)

    def _set(self, outlet: Outlet, on: bool) -> None:
        outlet.on = on
        if outlet.feed is not None:
            outlet.feed.update()

    def session(self, login: str) -> Session:
        if self.dialect is PduDialect.APC:
            return _Shell(self, _apc)
        return _Shell(self, _raritan)

    def prompt(self) -> str:
        return "apc>" if self.dialect is PduDialect.APC else f"[{self.name}] # "

    def banner(self) -> str:
        if self.dialect is PduDialect.APC:
            return (
                "\r\nAmerican Power Conversion               Network Management Card AOS v6.9.6\r\n"
                f"Name      : {self.name}\r\n\r\nType ? for command listing\r\n\r\n"
            )
        return "\r\nWelcome to PX2 CLI!\r\n\r\n"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "outlets": len(self.outlets)}


@dataclass
class Reply:
    """What a command line gets: output lines, and maybe a question or the end of the session."""

    lines: list[str] = field(default_factory=list)
    question: str | None = None  # asked with [y/n]; `then` runs on `y`
    then: Callable[[], None] | None = None
    close: bool = False


Dialogue = Callable[[Pdu, str], Reply]


def _raritan(pdu: Pdu, command: str) -> Reply:
    words = command.split()
    if words in (["exit"], ["quit"]):
        return Reply(close=True)
    if words[:2] == ["show", "outlets"] and len(words) <= 3:
        try:
            outlets = pdu.select(words[2] if len(words) == 3 else "all")
        except BadOutlet as error:
            return Reply([f"Error: Invalid outlet number {error}"])
        lines: list[str] = []
        for outlet in outlets:
            state = "On" if outlet.on else "Off"
            lines += [*([""] if lines else []), f"Outlet {outlet.number} - {outlet.name}:"]
            lines.append(f"  Power state: {state}")
        return Reply(lines)
    if words[:2] == ["power", "outlets"] and len(words) in (4, 5):
        spec, action, force = words[2], words[3], words[4:] == ["/y"]
        if action not in ("on", "off", "cycle") or (len(words) == 5 and not force):
            return Reply(["Error: Unknown command"])
        try:
            outlets = pdu.select(spec)
        except BadOutlet as error:
            return Reply([f"Error: Invalid outlet number {error}"])
        if force:
            pdu.switch(outlets, action)
            return Reply()
        if action == "cycle":
            question = f"Do you wish to cycle power of outlet {spec}?"
        else:
            question = f"Do you wish to turn outlet {spec} {action}?"
        return Reply(question=question, then=lambda: pdu.switch(outlets, action))
    return Reply(["Error: Unknown command"])


APC_ACTIONS = {"olon": "on", "oloff": "off", "olreboot": "cycle"}


def _apc(pdu: Pdu, command: str) -> Reply:
    words = command.split()
    verb = words[0].lower()
    if verb in ("exit", "quit", "bye") and len(words) == 1:
        return Reply(close=True)
    if verb not in ("olstatus", *APC_ACTIONS):
        return Reply(["E101: Command Not Found"])
    if len(words) != 2:
        return Reply(["E102: Parameter Error"])
    try:
        outlets = pdu.select(words[1])
    except BadOutlet:
        return Reply(["E102: Parameter Error"])
    if verb == "olstatus":
        states = [f" {o.number}: {o.name}: {'On' if o.on else 'Off'}" for o in outlets]
        return Reply(["E000: Success", *states])
    pdu.switch(outlets, APC_ACTIONS[verb])
    return Reply(["E000: Success"])


class _Shell(asyncssh.SSHServerSession[bytes]):
    """The PDU's CLI on one channel: line editing with echo (on a PTY), prompts, [y/n]."""

    def __init__(self, pdu: Pdu, dialogue: Dialogue) -> None:
        self._pdu = pdu
        self._dialogue = dialogue
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._echo = False
        self._typed = bytearray()
        self._after_cr = False  # a \n right after \r ends nothing more
        self._pending: Callable[[], None] | None = None  # waiting for y/n
        self._asked = False  # a [y/n] question is open
        self._answered = False  # swallow the end of the answer's line

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, *args: Any) -> bool:
        self._echo = True
        return True

    def shell_requested(self) -> bool:
        return True

    def session_started(self) -> None:
        self._write(self._pdu.banner() + self._pdu.prompt())

    def eof_received(self) -> bool:
        return False  # a CLI with no more input is done

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        for value in data:
            if self._chan is None or self._chan.is_closing():
                return
            char = chr(value)
            end_of_line = char in "\r\n"
            after_cr, self._after_cr = self._after_cr, char == "\r"
            if self._asked:
                if not end_of_line:
                    self._answer(char)
                continue
            if end_of_line and (self._answered or (char == "\n" and after_cr)):
                continue
            self._answered = False
            if end_of_line:
                self._line()
            elif char in "\x7f\x08":
                if self._typed:
                    del self._typed[-1]
                    self._echo_text("\b \b")
            elif char == "\x03":
                self._typed.clear()
                self._echo_text("^C")
                self._write("\r\n" + self._pdu.prompt())
            elif char.isprintable():
                self._typed.append(value)
                self._echo_text(char)

    def _line(self) -> None:
        command = self._typed.decode(errors="replace").strip()
        self._typed.clear()
        self._echo_text("\r\n")
        reply = self._dialogue(self._pdu, command) if command else Reply()
        output = "".join(f"{line}\r\n" for line in reply.lines)
        if reply.close:
            self._write(output)
            assert self._chan is not None
            self._chan.exit(0)
        elif reply.question is not None:
            self._write(f"{output}{reply.question} [y/n] ")
            self._asked, self._pending = True, reply.then
        else:
            self._write(output + self._pdu.prompt())

    def _answer(self, char: str) -> None:
        then, self._pending = self._pending, None
        self._asked, self._answered = False, True
        self._echo_text(char)
        if char in "yY" and then is not None:
            then()
        self._write("\r\n" + self._pdu.prompt())

    def _echo_text(self, text: str) -> None:
        if self._echo:
            self._write(text)

    def _write(self, text: str) -> None:
        if self._chan is not None and not self._chan.is_closing():
            self._chan.write(text.encode())
