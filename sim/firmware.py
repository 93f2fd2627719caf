"""The text firmware behind a simulated machine's serial port: POST, BIOS setup, PXE, a login.

It runs in real time on the running asyncio loop (`loop.call_later`); with no loop running it
only keeps its state, so the machine model stays usable in plain unit tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from enum import StrEnum

from sim.serial import SerialLine

CLEAR = b"\x1b[2J\x1b[H"
WIDTH, HEIGHT = 80, 25
ESCAPE_WAIT = 0.05  # a lone ESC is a key only if nothing follows this soon (as on real BIOSes)

# Function keys as VT220, VT100 and "VT100+" terminals send them (console redirection modes)
ESCAPES: dict[bytes, str] = {
    b"\x1b[12~": "F2",
    b"\x1bOQ": "F2",
    b"\x1b2": "F2",
    b"\x1b[21~": "F10",
    b"\x1bOY": "F10",
    b"\x1b0": "F10",
    b"\x1b[24~": "F12",
    b"\x1b@": "F12",
    b"\x1b[A": "UP",
    b"\x1b[B": "DOWN",
    b"\x1b[C": "RIGHT",
    b"\x1b[D": "LEFT",
    b"\x1bOA": "UP",
    b"\x1bOB": "DOWN",
    b"\x1bOC": "RIGHT",
    b"\x1bOD": "LEFT",
}
CONTROLS = {0x0D: "ENTER", 0x0A: "ENTER", 0x7F: "BACKSPACE", 0x08: "BACKSPACE", 0x03: "CTRL-C"}

TABS = ("Main", "Advanced", "Boot", "Security", "Save & Exit")
SYSRQ_HELP = (
    b"\r\nSysRq : HELP : loglevel(0-9) reboot(b) crash(c) terminate-all-tasks(e) "
    b"memory-full-oom-kill(f) kill-all-tasks(i) thaw-filesystems(j) sak(k) "
    b"show-memory-usage(m) nice-all-RT-tasks(n) poweroff(o) show-registers(p) "
    b"show-all-timers(q) unraw(r) sync(s) show-task-states(t) unmount(u) "
    b"show-blocked-tasks(w)\r\n"
)


class Screen(StrEnum):
    """What the firmware (or the OS) shows on the console."""

    OFF = "off"
    POST = "post"
    SETUP = "setup"
    PXE = "pxe"
    BOOT = "boot"  # boot loader and kernel messages
    LOGIN = "login"
    PASSWORD = "password"
    SHELL = "shell"


LINUX = (Screen.BOOT, Screen.LOGIN, Screen.PASSWORD, Screen.SHELL)


class BootTarget(StrEnum):
    """Where the BIOS goes after POST unless a key pressed during POST says otherwise."""

    DISK = "disk"
    SETUP = "setup"
    PXE = "pxe"


class KeyDecoder:
    """Bytes typed on a terminal to key names ("F2", "ENTER") or single characters."""

    def __init__(self) -> None:
        self.pending = b""  # the start of an escape sequence, waiting for the rest
        self._after_cr = False

    def decode(self, data: bytes) -> list[str]:
        keys: list[str] = []
        buffer, at = self.pending + data, 0
        self.pending = b""
        while at < len(buffer):
            byte = buffer[at]
            if byte != 0x1B:
                if not (byte == 0x0A and self._after_cr):  # CR LF is one Enter
                    keys.append(CONTROLS.get(byte, chr(byte)))
                self._after_cr = byte == 0x0D
                at += 1
                continue
            self._after_cr = False
            rest = buffer[at:]
            known = next((seq for seq in ESCAPES if rest.startswith(seq)), None)
            if known is not None:
                keys.append(ESCAPES[known])
                at += len(known)
            elif any(seq.startswith(rest) for seq in ESCAPES) or rest == b"\x1b[":
                self.pending = rest
                break
            elif rest.startswith(b"\x1b["):  # another CSI sequence (F5, Home...): skip it whole
                end = next((i for i in range(2, len(rest)) if 0x40 <= rest[i] <= 0x7E), None)
                if end is None:
                    self.pending = rest
                    break
                at += end + 1
            else:
                keys.append("ESC")
                at += 1
        return keys

    def flush(self) -> list[str]:
        """What is pending when nothing more came: a lone ESC and whatever followed it."""
        pending, self.pending = self.pending, b""
        return ["ESC", *self.decode(pending[1:])] if pending else []


class Firmware:
    """A server's serial-console firmware and OS: reacts to power events and keys."""

    def __init__(self, serial: SerialLine, hostname: str = "sim", post_seconds: float = 1.5):
        self.serial = serial
        self.hostname = hostname
        self.post_seconds = post_seconds
        self.screen = Screen.OFF
        self.screens: list[Screen] = []  # every screen entered, in order, for tests
        self.keys: deque[str] = deque(maxlen=512)  # every key seen while powered, for tests
        self._decoder = KeyDecoder()
        self._timers: list[asyncio.TimerHandle] = []
        self._escape_timer: asyncio.TimerHandle | None = None
        self._next = BootTarget.DISK
        self._tab = 0
        self._line = bytearray()
        serial.on_input(self._input, self._break)

    # --- power events, from the machine ----------------------------------------------------

    def power_on(self, target: BootTarget) -> None:
        """The machine (re)starts: POST, then `target` unless F2 or F12 changes it."""
        self._reset()
        self._next = target
        self._enter(Screen.POST)
        self._emit(CLEAR + b"Rackhand SimBIOS 2.1  (C) 2026\r\n\r\n")
        post = self.post_seconds
        self._play(
            [
                (0.15 * post, b"CPU: Rackhand SimCPU @ 2.40GHz, 16 cores\r\n"),
                (0.25 * post, b"Memory test: 65536 MB OK\r\n"),
                (0.3 * post, b"\r\nPress <F2> to enter SETUP, <F12> for Network Boot\r\n"),
            ],
            post,
            self._post_done,
        )

    def shutdown(self) -> None:
        """The OS finished a soft off (ACPI power button): its last words, then off."""
        if self.screen is not Screen.OFF:
            self._emit(b"\r\nreboot: Power down\r\n")
        self.power_off()

    def power_off(self) -> None:
        """Power is gone: output stops and input is ignored."""
        self._reset()
        if self.screen is not Screen.OFF:
            self._enter(Screen.OFF)

    def resume(self) -> None:
        """The machine was already running (restored state): sit at the login prompt."""
        self._reset()
        self._enter(Screen.LOGIN)

    # --- the boot path ---------------------------------------------------------------------

    def _post_done(self) -> None:
        if self._next is BootTarget.SETUP:
            self._setup()
        elif self._next is BootTarget.PXE:
            self._pxe()
        else:
            self._disk()

    def _setup(self) -> None:
        self._enter(Screen.SETUP)
        self._tab = 0
        self._draw_setup()

    def _pxe(self) -> None:
        self._enter(Screen.PXE)
        self._emit(b"\r\nPXE boot: Rackhand SimNIC, MAC 52:54:00:00:00:01\r\nPXE boot: DHCP...")
        step = self.post_seconds / 4
        self._play(
            [(step * n, b".") for n in (1, 2, 3)]
            + [(step * 3.5, b"\r\nPXE boot: no DHCP offers received, trying the next device\r\n")],
            self.post_seconds,
            self._disk,
        )

    def _disk(self) -> None:
        self._enter(Screen.BOOT)
        self._emit(b"\r\nBooting from Hard Disk...\r\n")
        lines = [
            b"[    0.000000] Linux version 6.1.0-sim (builder@rackhand) #1 SMP\r\n",
            b"[    0.000000] Command line: root=/dev/sda1 ro console=ttyS0,115200n8\r\n",
            b"[    0.412011] Serial: 8250/16550 driver, 4 ports, IRQ sharing enabled\r\n",
            b"[    1.203544] EXT4-fs (sda1): mounted filesystem with ordered data mode\r\n",
            b"[    2.918230] systemd[1]: Reached target Multi-User System.\r\n",
        ]
        step = self.post_seconds / 2 / len(lines)
        self._play(
            [(step * n, line) for n, line in enumerate(lines)],
            self.post_seconds / 2,
            self._login,
        )

    def _login(self) -> None:
        host = self.hostname.encode()
        self._enter(Screen.LOGIN)
        self._emit(b"\r\nRackhand SimOS 1.0 " + host + b" ttyS0\r\n" + self._login_prompt())

    def _login_prompt(self) -> bytes:
        return b"\r\n" + self.hostname.encode() + b" login: "

    # --- input ------------------------------------------------------------------------------

    def _input(self, data: bytes) -> None:
        if self.screen is Screen.OFF:
            return
        self._keys(self._decoder.decode(data))
        if self._decoder.pending:
            loop = _running_loop()
            if loop is None:
                self._keys(self._decoder.flush())
            elif self._escape_timer is None:
                self._escape_timer = loop.call_later(ESCAPE_WAIT, self._escape_waited)

    def _escape_waited(self) -> None:
        self._escape_timer = None
        self._keys(self._decoder.flush())

    def _keys(self, keys: Iterable[str]) -> None:
        for key in keys:
            if self.screen is Screen.OFF:
                return
            self.keys.append(key)
            self._key(key)

    def _key(self, key: str) -> None:
        if self.screen is Screen.POST:
            if key == "F2" and self._next is not BootTarget.SETUP:
                self._next = BootTarget.SETUP
                self._emit(b"Entering SETUP...\r\n")
            elif key == "F12" and self._next is BootTarget.DISK:
                self._next = BootTarget.PXE
                self._emit(b"Network boot requested\r\n")
        elif self.screen is Screen.SETUP:
            if key in ("ESC", "F10"):
                self._emit(CLEAR)
                self._disk()
            elif key in ("LEFT", "RIGHT"):
                self._tab = (self._tab + (1 if key == "RIGHT" else -1)) % len(TABS)
                self._draw_setup()
        elif self.screen in (Screen.LOGIN, Screen.PASSWORD, Screen.SHELL):
            self._edit(key)

    def _edit(self, key: str) -> None:
        """Line editing at the login, password and shell prompts; the firmware echoes."""
        echo = self.screen is not Screen.PASSWORD
        if key == "ENTER":
            line, self._line = self._line.decode("latin-1"), bytearray()
            self._submit(line)
        elif key == "BACKSPACE":
            if self._line:
                self._line.pop()
                if echo:
                    self._emit(b"\b \b")
        elif key == "CTRL-C" and self.screen is Screen.SHELL:
            self._line = bytearray()
            self._emit(b"^C\r\n$ ")
        elif len(key) == 1 and ord(key) >= 0x20:
            self._line.append(ord(key))
            if echo:
                self._emit(key.encode("latin-1"))

    def _submit(self, line: str) -> None:
        if self.screen is Screen.LOGIN:
            if not line:
                self._emit(self._login_prompt())
                return
            self._enter(Screen.PASSWORD)
            self._emit(b"\r\nPassword: ")
        elif self.screen is Screen.PASSWORD:
            self._enter(Screen.SHELL)
            self._emit(b"\r\n$ ")
        elif line.strip() in ("exit", "logout"):
            self._enter(Screen.LOGIN)
            self._emit(b"\r\nlogout\r\n" + self._login_prompt())
        else:
            self._emit(b"\r\n$ ")

    def _break(self) -> None:
        if self.screen is Screen.OFF:
            return
        self.keys.append("BREAK")
        if self.screen in LINUX:  # the kernel's magic SysRq; a bare break asks for its help
            self._emit(SYSRQ_HELP)

    # --- the setup screen -------------------------------------------------------------------

    def _draw_setup(self) -> None:
        fields = {
            "Main": [
                ("System Time", time.strftime("[%H:%M:%S]")),
                ("System Date", time.strftime("[%a %m/%d/%Y]")),
                ("BIOS Version", "2.1"),
                ("Processor", "Rackhand SimCPU @ 2.40GHz"),
                ("Total Memory", "65536 MB"),
            ],
            "Advanced": [
                ("Console Redirection", "[Enabled]"),
                ("Terminal Type", "[VT100+]"),
                ("Bits per second", "[115200]"),
                ("Virtualization", "[Enabled]"),
            ],
            "Boot": [
                ("Boot Option #1", "[Hard Disk]"),
                ("Boot Option #2", "[Network: PXE]"),
                ("Boot Option #3", "[CD/DVD]"),
                ("Quiet Boot", "[Disabled]"),
            ],
            "Security": [
                ("Administrator Password", "Not Installed"),
                ("User Password", "Not Installed"),
                ("Secure Boot", "[Disabled]"),
            ],
            "Save & Exit": [
                ("Save Changes and Exit", ""),
                ("Discard Changes and Exit", ""),
                ("Save Changes and Reset", ""),
            ],
        }[TABS[self._tab]]
        rows = [""] * HEIGHT
        rows[0] = "BIOS SETUP UTILITY".center(WIDTH)
        rows[1] = "  " + "  ".join(TABS)
        rows[2] = rows[HEIGHT - 2] = "-" * WIDTH
        for n, (name, value) in enumerate(fields):
            rows[4 + n] = f"  {name:<26}{value}"
        rows[HEIGHT - 1] = "  ESC: Exit   F10: Save & Exit   <- ->: Select Screen"
        screen = "".join(f"\x1b[{n + 1};1H{row:<{WIDTH}.{WIDTH}}" for n, row in enumerate(rows))
        column = 3 + sum(len(tab) + 2 for tab in TABS[: self._tab])
        selected = f"\x1b[2;{column}H\x1b[7m{TABS[self._tab]}\x1b[0m\x1b[5;3H"
        self._emit(CLEAR + (screen + selected).encode())

    # --- plumbing ---------------------------------------------------------------------------

    def _enter(self, screen: Screen) -> None:
        self.screen = screen
        self.screens.append(screen)
        self._line = bytearray()

    def _emit(self, data: bytes) -> None:
        if self.screen is not Screen.OFF:
            self.serial.emit(data)

    def _play(self, steps: list[tuple[float, bytes]], end: float, then: Callable[[], None]) -> None:
        """Print each step's bytes at its offset (seconds from now), then go on at `end`."""
        loop = _running_loop()
        if loop is None:
            return
        self._timers = [loop.call_later(offset, self._emit, data) for offset, data in steps] + [
            loop.call_later(end, self._go_on, then)
        ]

    def _go_on(self, then: Callable[[], None]) -> None:
        self._timers = []
        then()

    def _reset(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        if self._escape_timer is not None:
            self._escape_timer.cancel()
            self._escape_timer = None
        self._decoder = KeyDecoder()
        self._line = bytearray()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
