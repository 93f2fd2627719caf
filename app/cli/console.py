"""`rackhand console DEVICE`: a device's console as a raw terminal, on the dashboard's WebSocket.

Bytes go both ways untouched in binary frames; what the central says (the write lock changing
hands, viewers joining, errors, the end) is shown as `[rackhand] …` lines on stderr. The terminal
is put in raw mode only when stdin is one, and given back as it was on every way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from agents.protocol import CloseReason
from app.cli.client import ApiError, Client, Connection, authenticated
from app.cli.output import fail
from app.urls import redact_urls

ESCAPE = 0x1D  # Ctrl-]
QUIET = 1.0  # s without output after stdin ended (a pipe) before we leave
NORMAL_ENDS = frozenset(  # exit 0; others exit 1
    {CloseReason.CLOSED, CloseReason.IDLE, CloseReason.MAX_LENGTH, CloseReason.UNWATCHED}
)
HELP = (
    ". or q   leave (the session stays open for the others)",
    "b        send a break (asks first: it halts Solaris and Cisco gear)",
    "w        take the write lock when nobody holds it",
    "W        take it over from its holder (admin)",
    "r        release the write lock",
    "Ctrl-]   send Ctrl-] itself",
    "?        this help",
)


class Via(StrEnum):
    AUTO = "auto"
    IPMI = "ipmi"
    CONSOLE_PORT = "console_port"
    LIBVIRT = "libvirt"  # a guest's serial console, through its hypervisor


def console(
    device: Annotated[str, typer.Argument(help="device name")],
    read_only: Annotated[bool, typer.Option("--read-only", help="watch; never type")] = False,
    via: Annotated[Via, typer.Option(help="auto: the paths in priority order")] = (Via.AUTO),
    ticket: Annotated[str | None, typer.Option(help="ticket reference, kept in the audit")] = None,
    reason: Annotated[str | None, typer.Option(help="why, kept in the audit")] = None,
) -> None:
    """Attach to a device's console (shared with the dashboard) as a raw terminal.

    \b
    Escape: Ctrl-] then
      . or q   leave (the session stays open for the others)
      b        send a break (asks first: a break halts Solaris and Cisco gear)
      w        take the write lock      W   take it over from its holder (admin)
      r        release the write lock   ?   this list
      Ctrl-]   send Ctrl-] itself

    Ctrl-C and Ctrl-Z go to the device.

    Without a terminal, stdin is sent as it comes; its end leaves once the output is quiet.

    Exit 0 after leaving or a normal close; 1 when the console cannot be opened or drops.
    """
    size = shutil.get_terminal_size()
    body: dict[str, Any] = {
        "via": via.value,
        "mode": "ro" if read_only else "rw",
        "cols": min(max(size.columns, 20), 500),
        "rows": min(max(size.lines, 5), 200),
    }
    body |= {key: value for key, value in {"ticket": ticket, "reason": reason}.items() if value}
    try:
        conn = authenticated()
        with Client(conn) as client:
            opened = client.request("POST", f"/devices/{device}/consoles", json=body).json()
    except ApiError as exc:
        fail(exc)  # prints the API's detail; not opening the console is a failure, not usage
        raise typer.Exit(1) from exc
    raise typer.Exit(asyncio.run(_attach(conn, opened, body["mode"])))


def stream_url(base: str, stream: str, mode: str) -> str:
    """The session's WebSocket, ws:// or wss:// after the scheme of the API's URL."""
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = stream.partition("?")[0]  # the answer says ?mode=ro when asked; we say it ourselves
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}?mode={mode}"


async def _attach(conn: Connection, opened: dict[str, Any], mode: str) -> int:
    url = stream_url(conn.url, str(opened["stream"]), mode)
    headers = {"Authorization": f"Bearer {conn.token}"} if conn.token else {}
    tls = (conn.ca_context() or True) if url.startswith("wss:") else None  # True: the defaults
    try:
        async with connect(url, additional_headers=headers, close_timeout=2, ssl=tls) as ws:
            return await _Viewer(ws, mode).run()
    except (OSError, WebSocketException) as exc:
        _notice(redact_urls(f"error: cannot attach to {url}: {exc}"))
        return 1


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """Raw mode while inside, when `fd` is a terminal; its settings restored on every way out."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


_fresh_line = True  # the cursor is at the start of a line: a notice needs no line break first


def _notice(text: str) -> None:
    """One `[rackhand] …` line on stderr; \r\n as the terminal may be raw."""
    global _fresh_line
    sys.stderr.write(("" if _fresh_line else "\r\n") + f"[rackhand] {text}\r\n")
    sys.stderr.flush()
    _fresh_line = True


def _clock(since: str) -> str:
    return datetime.fromisoformat(since).astimezone().strftime("%H:%M")


class _Viewer:
    """One attached viewer: keys to the socket, the socket to the screen, until one side ends."""

    def __init__(self, ws: ClientConnection, mode: str) -> None:
        self.ws = ws
        self.mode = mode
        self.you: str | None = None
        self.writer: dict[str, Any] | None = None
        self.warned = False  # the read-only notice was shown since the lock last changed hands
        self.state = "text"  # text, escape (after Ctrl-]), confirm (a break, asked)
        self.keys: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.output_seen = asyncio.Event()
        self.settled = asyncio.Event()  # the write lock is known: keys typed early wait for it
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def writing(self) -> bool:
        return self.writer is not None and self.writer.get("viewer") == self.you

    def finish(self, code: int) -> None:
        if not self.outcome.done():
            self.outcome.set_result(code)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # signals first: a SIGTERM must never find the terminal raw with nobody to restore it
        with self._signals(loop), _raw(sys.stdin.fileno()), _stdin_feed(loop, self.keys):
            for work in (self._receive(), self._type()):
                self._spawn(work)
            try:
                return await self.outcome
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and not self.outcome.done():
            self.outcome.set_exception(error)

    @contextlib.contextmanager
    def _signals(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        for number in stops:
            loop.add_signal_handler(number, self.finish, 1)
        loop.add_signal_handler(signal.SIGWINCH, self._spawn_resize)
        try:
            yield
        finally:
            for number in (*stops, signal.SIGWINCH):
                loop.remove_signal_handler(number)

    def _spawn_resize(self) -> None:
        self._spawn(self._resize())

    # The socket to the screen ---------------------------------------------------------------

    async def _receive(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                if isinstance(message, bytes):
                    self._output(message)
                else:
                    await self._event(json.loads(message))
                if self.outcome.done():
                    return
        if self.you is not None:  # refused streams said why in an error event already
            code = self.ws.close_code
            _notice(f"connection lost (close code {code})" if code else "connection lost")
        self.finish(1)

    def _output(self, data: bytes) -> None:
        global _fresh_line
        self.output_seen.set()
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError:  # stdout closed under us, e.g. `| head`
            self.finish(1)
        _fresh_line = data.endswith(b"\n")

    async def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "hello":
            self.you, self.writer = event["you"], event.get("writer")
            _notice(f"connected to {event['device']} via {event.get('path')} "
                    "(escape: Ctrl-] then ? for help)")  # fmt: skip
            if self.writer is not None and not self.writing:
                _notice(f"the write lock is held by {self._holder()}")
            if self.writer is not None or self.mode == "ro":
                self.settled.set()  # else the lock is ours in the `writer` event that follows
        elif kind == "writer":
            await self._writer(event.get("writer"), forced=bool(event.get("forced")))
        elif kind in ("joined", "left") and event.get("viewer") != self.you:
            ro = " (read-only)" if event.get("mode") == "ro" else ""
            _notice(f"{event.get('name')} {kind}{ro}")
        elif kind == "break":
            _notice(f"break sent by {event.get('by')}")
        elif kind == "power":
            _notice(f"power {event.get('action')} by {event.get('by')}: {event.get('status')}")
        elif kind == "error" and event.get("error") == "InUse" and self.writer is not None:
            _notice(f"in use by {self._holder()}; Ctrl-] W takes it over (admin)")
        elif kind == "error":
            _notice(f"error ({event.get('error')}): {event.get('detail')}")
        elif kind == "closed":
            _notice(f"console closed ({event.get('reason')}): {event.get('message')}")
            self.finish(0 if event.get("reason") in NORMAL_ENDS else 1)

    async def _writer(self, holder: dict[str, Any] | None, *, forced: bool) -> None:
        self.writer, self.warned = holder, False
        self.settled.set()
        taken = ", taken over" if forced else ""
        if holder is None:
            hint = "" if self.mode == "ro" else " (Ctrl-] w to take it)"
            _notice(f"nobody holds the write lock{hint}")
        elif self.writing:
            _notice(f"you hold the write lock{taken}")
            if sys.stdout.isatty():
                await self._resize()
        else:
            _notice(f"the write lock is held by {self._holder()}{taken}")

    def _holder(self) -> str:
        """Who writes, e.g. `alice since 10:02`."""
        assert self.writer is not None
        return f"{self.writer.get('name')} since {_clock(str(self.writer.get('since')))}"

    async def _resize(self) -> None:
        if self.writing:
            size = shutil.get_terminal_size()
            resize = {"type": "resize", "cols": size.columns, "rows": size.lines}
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(json.dumps(resize))

    # Keys to the socket ---------------------------------------------------------------------

    async def _type(self) -> None:
        await self.settled.wait()
        with contextlib.suppress(ConnectionClosed):
            while (data := await self.keys.get()) is not None:
                await self._keys(data)
                if self.outcome.done():
                    return
            with contextlib.suppress(TimeoutError):  # stdin ended: leave once the output is quiet
                while True:
                    self.output_seen.clear()
                    await asyncio.wait_for(self.output_seen.wait(), QUIET)
            self.finish(0)

    async def _keys(self, data: bytes) -> None:
        plain = bytearray()
        for byte in data:
            state, self.state = self.state, "text"
            if state == "text" and byte == ESCAPE:
                self.state = "escape"
            elif state == "text" or (state == "escape" and byte == ESCAPE):
                plain.append(byte)
            else:
                await self._send(bytes(plain))
                plain.clear()
                if state == "confirm":
                    await self._confirm_break(byte)
                else:
                    await self._command(chr(byte))
                if self.outcome.done():
                    return
        await self._send(bytes(plain))

    async def _send(self, data: bytes) -> None:
        if not data:
            return
        if self.writing:
            await self.ws.send(data)
        elif not self.warned:
            self.warned = True
            _notice(self._read_only())

    def _read_only(self) -> str:
        if self.mode == "ro":
            return "read-only: you joined with --read-only; what you type is not sent"
        if self.writer is None:
            return "read-only: nobody holds the write lock; Ctrl-] w to take it"
        return f"read-only: in use by {self._holder()}; Ctrl-] w to take it when free"

    async def _command(self, key: str) -> None:
        controls = {
            "w": {"type": "take_write"},
            "W": {"type": "take_write", "force": True},
            "r": {"type": "release_write"},
        }
        if key in ".q":
            _notice("left the console")
            self.finish(0)
        elif key in controls:
            if self.mode == "ro" and key != "r":
                _notice("read-only: you joined with --read-only; attach again to write")
                return
            await self.ws.send(json.dumps(controls[key]))
        elif key == "b":
            if not self.writing:
                _notice(self._read_only())
                return
            self.state = "confirm"
            _notice("send a break? [y/N]")
        elif key == "?":
            _notice("after Ctrl-]:" + "".join(f"\r\n  {line}" for line in HELP))
        else:
            _notice(f"unknown escape {key!r}; Ctrl-] then ? for help")

    async def _confirm_break(self, byte: int) -> None:
        if byte in b"yY":
            await self.ws.send(json.dumps({"type": "break", "confirm": True}))
        else:
            _notice("no break sent")


@contextlib.contextmanager
def _stdin_feed(
    loop: asyncio.AbstractEventLoop, keys: asyncio.Queue[bytes | None]
) -> Iterator[None]:
    """Bytes from stdin as they come into `keys`; None when it ends."""
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        keys.put_nowait(data or None)

    try:
        loop.add_reader(fd, readable)
    except (PermissionError, ValueError):  # regular files and /dev/null: epoll cannot watch them
        threading.Thread(target=_pump, args=(loop, keys, fd), daemon=True).start()
        yield
        return
    try:
        yield
    finally:
        loop.remove_reader(fd)


def _pump(loop: asyncio.AbstractEventLoop, keys: asyncio.Queue[bytes | None], fd: int) -> None:
    with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: the loop closed first
        while data := os.read(fd, 4096):
            loop.call_soon_threadsafe(keys.put_nowait, data)
        loop.call_soon_threadsafe(keys.put_nowait, None)
