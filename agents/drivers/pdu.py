"""Switched PDU outlets over the PDU's SSH CLI (docs/dialects.md: `raritan_px`, `apc`).

A device's outlets (two for dual power supplies) are always switched in one command, so both
supplies lose power together. Every action reads the outlets first (proving the shell works and
the outlets exist before anything is switched), acts once, answers the PDU's confirmation, and
reads them again (docs/dialects.md). One shell per PDU, used by one call at a time, kept
open for `idle` seconds so a burst of orders logs in once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from agents.drivers import ssh
from agents.drivers.base import (
    DeviceTimeout,
    DriverError,
    HostKeyListener,
    OptionError,
    OutletReading,
    Refused,
    Unreachable,
    Unsupported,
)
from agents.protocol import Dialect, PduOutletPath, PowerAction, SshTarget

log = logging.getLogger(__name__)

_MAYBE_RAN = "; the action may or may not have run: check the power state before repeating it"


@dataclass(frozen=True)
class PduCli:
    """A PDU CLI: its prompt, how it lists and switches outlets, and how it says no."""

    prompt: re.Pattern[bytes]
    status: str
    outlet: re.Pattern[bytes]  # groups: number, state (On/Off)
    commands: dict[PowerAction, str]  # formatted with the outlet list, e.g. "5,6"
    error: re.Pattern[bytes]  # group 1: the PDU's words
    confirm: re.Pattern[bytes] | None = None  # a question to answer `y`


DIALECTS: dict[Dialect, PduCli] = {
    Dialect.RARITAN_PX: PduCli(
        prompt=re.compile(rb"(?:^|[\r\n])\[[^\]\r\n]*\] # ?"),
        status="show outlets",
        outlet=re.compile(rb"Outlet (\d+)[^\r\n]*:\s*[\r\n]+\s*Power state: (On|Off)"),
        commands={
            PowerAction.ON: "power outlets {} on",
            PowerAction.OFF: "power outlets {} off",
            PowerAction.CYCLE: "power outlets {} cycle",
        },
        error=re.compile(rb"(Error: [^\r\n]*)"),
        confirm=re.compile(rb"\[y/n\] ?"),
    ),
    Dialect.APC: PduCli(
        prompt=re.compile(rb"(?:^|[\r\n])apc> ?"),
        status="olStatus all",
        outlet=re.compile(rb"(?m)^\s*(\d+): [^\r\n]*: (On|Off)\s*$"),
        commands={
            PowerAction.ON: "olOn {}",
            PowerAction.OFF: "olOff {}",
            PowerAction.CYCLE: "olReboot {}",
        },
        error=re.compile(rb"(E(?!000)\d{3}: [^\r\n]*)"),
    ),
}


class _Shell:
    """One logged-in CLI session on a PTY: send a line, read up to the next prompt."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        stdin: asyncssh.SSHWriter[bytes],
        stdout: asyncssh.SSHReader[bytes],
        dialect: PduCli,
        where: str,
    ) -> None:
        self.conn = conn
        self._stdin = stdin
        self._stdout = stdout
        self._dialect = dialect
        self._where = where
        self._buffer = b""

    @property
    def broken(self) -> bool:
        return self._stdout.at_eof() or self._stdin.channel.is_closing()

    async def until(self, *patterns: re.Pattern[bytes]) -> tuple[bytes, int]:
        """Text read before the first of `patterns` to appear, and which one it was."""
        while True:
            found = [
                (m.start(), m.end(), i)
                for i, p in enumerate(patterns)
                if (m := p.search(self._buffer))
            ]
            if found:
                start, end, index = min(found)
                text, self._buffer = self._buffer[:start], self._buffer[end:]
                return text, index
            chunk = await self._stdout.read(4096)
            if not chunk:
                raise Unreachable(f"{self._where} closed the CLI session")
            self._buffer += chunk

    async def send(self, line: str) -> None:
        self._buffer = b""  # whatever came after the last prompt is not this command's answer
        self._stdin.write(line.encode() + b"\r")
        await self._stdin.drain()

    async def command(self, line: str, *also: re.Pattern[bytes]) -> tuple[bytes, int]:
        """Send `line`, read its answer up to the prompt (0) or one of `also` (1, 2...)."""
        await self.send(line)
        while True:
            text, index = await self.until(self._dialect.prompt, *also)
            if text.strip() not in (b"", line.encode()):
                return text, index  # a prompt with nothing before it is an earlier stray one

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stdin.write(b"exit\r")
        self.conn.close()


@dataclass
class _Pdu:
    """What is kept per PDU: its lock (one CLI session at a time) and the open shell."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    shell: _Shell | None = None
    key: tuple[str, str, str, str | None] | None = None
    idle: asyncio.TimerHandle | None = None


class PduDriver:
    """`OutletDriver` for `PduOutletPath`s: AC on, off or cycled, never a machine's state.

    `command_timeout` bounds each command's answer (APC's SSH is slow); `cycle_wait` is how
    long a cycle waits for its outlets to come back before reporting what it reads (the PDU's
    cycle delay; other orders to the same PDU wait behind it, so it stays short).
    """

    def __init__(
        self,
        *,
        on_host_key: HostKeyListener | None = None,
        settings: ssh.SshSettings | None = None,
        command_timeout: float = 10.0,
        idle: float = 30.0,
        cycle_wait: float = 5.0,
        poll: float = 0.25,
    ) -> None:
        self._on_host_key = on_host_key
        self._settings = settings or ssh.SshSettings()
        self._command_timeout = command_timeout
        self._idle = idle
        self._cycle_wait = cycle_wait
        self._poll = poll
        self._pdus: dict[str, _Pdu] = {}

    @staticmethod
    def validate(options: Mapping[str, Any]) -> None:
        """The options of a PDU's ssh path: a dialect this driver speaks (docs/dialects.md)."""
        dialect = ssh.dialect(options)
        if dialect not in DIALECTS:
            raise OptionError(
                "options.dialect",
                f"dialect {dialect!r} cannot switch PDU outlets; use one of "
                f"{', '.join(DIALECTS)} (docs/dialects.md)",
            )

    async def switch(self, path: PduOutletPath, action: PowerAction) -> OutletReading:
        """Do `action` on all the path's outlets together; what they read before and after.

        `on` and `off` send nothing when every outlet already is as asked.
        """
        if action not in (PowerAction.STATUS, *DIALECTS[Dialect.APC].commands):
            raise Unsupported(
                f"PDU {path.endpoint}: a PDU outlet can only switch power: on, off, cycle "
                f"(not {action})"
            )
        dialect = DIALECTS.get(path.pdu.dialect)
        if dialect is None:
            raise Unsupported(
                f"PDU {path.endpoint}: no PDU driver for dialect '{path.pdu.dialect}' "
                f"(known: {', '.join(DIALECTS)})"
            )
        if not path.outlets:
            raise Refused(f"PDU {path.endpoint}: the path names no outlets")
        before, after = await self._locked(path, dialect, action)
        if action is PowerAction.CYCLE:
            after = await self._returned(path, dialect, after)
        _warn_if_mixed(path, after)
        sent = action is not PowerAction.STATUS and not _already(action, before)
        return OutletReading(path.outlets, _on(before), _on(after), sent)

    async def close(self) -> None:
        """Log out of every PDU."""
        for pdu in self._pdus.values():
            async with pdu.lock:
                self._drop(pdu)

    async def _locked(
        self, path: PduOutletPath, dialect: PduCli, action: PowerAction
    ) -> tuple[dict[int, bool], dict[int, bool]]:
        pdu = self._pdus.setdefault(path.pdu.endpoint, _Pdu())
        async with pdu.lock:
            if pdu.idle is not None:
                pdu.idle.cancel()
                pdu.idle = None
            try:
                states = await self._session(pdu, path, dialect, action)
            except BaseException:
                self._drop(pdu)  # a shell in an unknown state is not reused
                raise
            loop = asyncio.get_running_loop()
            pdu.idle = loop.call_later(self._idle, self._drop, pdu)
            return states

    async def _session(
        self, pdu: _Pdu, path: PduOutletPath, dialect: PduCli, action: PowerAction
    ) -> tuple[dict[int, bool], dict[int, bool]]:
        """The outlets read before and after the action (the same reading if nothing was sent)."""
        where = f"PDU {path.pdu.endpoint}"
        key = (path.pdu.username, path.pdu.password, path.pdu.dialect, path.pdu.host_key)
        if pdu.shell is not None and (pdu.key != key or pdu.shell.broken):
            self._drop(pdu)
        reused = pdu.shell is not None
        try:
            before = await self._read(pdu, path, dialect, where)
        except (Unreachable, DeviceTimeout):
            if not reused:
                raise
            self._drop(pdu)  # the PDU logged the idle session out: once more, afresh
            before = await self._read(pdu, path, dialect, where)
        pdu.key = key
        if action is PowerAction.STATUS or _already(action, before):
            return before, before
        shell = pdu.shell
        assert shell is not None
        line = dialect.commands[action].format(",".join(map(str, path.outlets)))
        try:
            async with asyncio.timeout(self._command_timeout):
                await self._act(shell, dialect, line, where)
        except (TimeoutError, Unreachable, asyncssh.Error, OSError) as exc:
            raise DeviceTimeout(
                f"{where}: no complete answer to {line!r}"
                + (f" ({exc})" if str(exc) else f" within {self._command_timeout:g} s")
                + (_MAYBE_RAN if action is PowerAction.CYCLE else "")
            ) from exc
        return before, await self._read(pdu, path, dialect, where)

    async def _act(self, shell: _Shell, dialect: PduCli, line: str, where: str) -> None:
        extra = (dialect.confirm,) if dialect.confirm is not None else ()
        text, index = await shell.command(line, *extra)
        if index == 1:  # the confirmation question
            await shell.send("y")
            text, _ = await shell.until(dialect.prompt)
        if error := dialect.error.search(text):
            raise Refused(f"{where} refused {line!r}: {_text(error.group(1))}")

    async def _read(
        self, pdu: _Pdu, path: PduOutletPath, dialect: PduCli, where: str
    ) -> dict[int, bool]:
        """The outlets' states (True = on), logging in first if there is no shell."""
        try:
            async with asyncio.timeout(self._settings.connect_timeout + self._command_timeout):
                if pdu.shell is None:
                    pdu.shell = await self._login(path.pdu, dialect, where)
                text, _ = await pdu.shell.command(dialect.status)
        except TimeoutError:
            raise DeviceTimeout(
                f"{where} did not answer {dialect.status!r} within {self._command_timeout:g} s"
            ) from None
        except DriverError:
            raise
        except Exception as exc:
            raise ssh.lost(exc, where) from exc
        if error := dialect.error.search(text):
            raise Refused(f"{where} refused {dialect.status!r}: {_text(error.group(1))}")
        states = {int(n): word == b"On" for n, word in dialect.outlet.findall(text)}
        missing = [n for n in path.outlets if n not in states]
        if missing:
            raise Refused(
                f"{where} has no outlet {_list(missing)} (it lists "
                f"{_list(sorted(states)) or 'none'}); check the outlets on the path"
            )
        return {n: states[n] for n in path.outlets}

    async def _login(self, target: SshTarget, dialect: PduCli, where: str) -> _Shell:
        conn = await ssh.connect(
            target,
            username=target.username,
            what="PDU",
            settings=self._settings,
            on_host_key=self._on_host_key,
        )
        try:
            stdin, stdout, _ = await conn.open_session(
                term_type="vt100", term_size=(200, 50), encoding=None
            )
            shell = _Shell(conn, stdin, stdout, dialect, where)
            await shell.until(dialect.prompt)  # past the banner
        except BaseException:
            conn.close()
            raise
        return shell

    async def _returned(
        self, path: PduOutletPath, dialect: PduCli, states: dict[int, bool]
    ) -> dict[int, bool]:
        """After a cycle, read again (lock released between reads) until the outlets are on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cycle_wait
        while not all(states.values()) and loop.time() < deadline:
            await asyncio.sleep(self._poll)
            _, states = await self._locked(path, dialect, PowerAction.STATUS)
        return states

    def _drop(self, pdu: _Pdu) -> None:
        if pdu.idle is not None:
            pdu.idle.cancel()
            pdu.idle = None
        if pdu.shell is not None:
            pdu.shell.close()
            pdu.shell = None


def _already(action: PowerAction, states: dict[int, bool]) -> bool:
    """`on` or `off` with every outlet already so: nothing to send."""
    wanted = {PowerAction.ON: True, PowerAction.OFF: False}.get(action)
    return wanted is not None and all(fed is wanted for fed in states.values())


def _on(states: dict[int, bool]) -> frozenset[int]:
    return frozenset(n for n, fed in states.items() if fed)


def _warn_if_mixed(path: PduOutletPath, states: dict[int, bool]) -> None:
    """A device fed by part of its outlets runs on part of its supplies: worth a log line."""
    on = [n for n, fed in states.items() if fed]
    if on and len(on) < len(states):
        off = [n for n, fed in states.items() if not fed]
        log.warning(
            "PDU %s: outlet %s on, outlet %s off; the device runs on part of its supplies",
            path.endpoint,
            _list(on),
            _list(off),
        )


def _list(numbers: Sequence[int]) -> str:
    return ",".join(map(str, numbers))


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()
