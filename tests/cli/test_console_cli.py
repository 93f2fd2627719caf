"""`rackhand console` as a subprocess, attached to a central run in-process on the fake driver."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Iterator
from subprocess import PIPE
from typing import IO

import httpx
import pytest
import uvicorn

from agents.drivers.fake import FakeConsole, FakeDriver
from agents.protocol import IpmiPath
from app.config import Settings
from app.main import create_app
from tests.live import RACKHAND, admin_token, free_port

# The command, not the database, is under test: one backend keeps the runs short.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

BMC = IpmiPath("10.0.0.1", "u", "bmc-secret")
WAIT = 10.0


def _until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def fake() -> FakeDriver:
    fake = FakeDriver()
    fake.machine(BMC).banner = b"web01 login: "
    return fake


@pytest.fixture
def env(settings: Settings, fake: FakeDriver) -> Iterator[dict[str, str]]:
    """The app on uvicorn in a thread (a real `rackhand serve` has no fake driver); web01 on SOL."""
    quiet = settings.model_copy(update={"poll_power": False})
    app = create_app(quiet, drivers={"ipmi": fake, "console_port": fake})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _until(lambda: server.started, "the central to start")
    url = f"http://127.0.0.1:{port}"
    token = admin_token(url)
    with httpx.Client(base_url=f"{url}/api/v1/") as api:
        api.headers["Authorization"] = f"Bearer {token}"
        for call, body in [
            ("sites", {"slug": "bj-dc1", "name": "Beijing", "kind": "datacenter"}),
            ("devices", {"name": "web01", "kind": "server", "site": "bj-dc1"}),
            ("devices/web01/paths",
             {"kind": "ipmi", "address": "10.0.0.1", "username": "u", "secret": "bmc-secret"}),
        ]:  # fmt: skip
            api.post(call, json=body).raise_for_status()
    try:
        yield os.environ | {"RACKHAND_URL": url, "RACKHAND_TOKEN": token}
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _device(fake: FakeDriver) -> FakeConsole:
    [console] = fake.machine(BMC).consoles  # one device session, however many viewers
    return console


class Attached:
    """A running `rackhand console` on pipes; its stdout and stderr collected as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [RACKHAND, "console", *args],
            env=env,
            stdin=PIPE,
            stdout=PIPE,
            stderr=PIPE,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.out, self.err = bytearray(), bytearray()
        for stream, sink in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._collect, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _collect(stream: IO[bytes], sink: bytearray) -> None:
        while chunk := os.read(stream.fileno(), 4096):
            sink += chunk

    def type(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def sees(self, wanted: bytes) -> None:
        _until(lambda: wanted in self.out, f"{wanted!r} on stdout; stderr: {bytes(self.err)!r}")

    def told(self, wanted: str) -> None:
        _until(lambda: wanted.encode() in self.err, f"{wanted!r} on stderr: {bytes(self.err)!r}")

    def exits(self) -> int:
        return self.process.wait(timeout=WAIT)


def test_type_break_leave_and_script(env: dict[str, str], fake: FakeDriver) -> None:
    user = Attached(env, "web01", "--ticket", "INC-7")
    user.told("[rackhand] connected to web01 via ipmi (escape: Ctrl-] then ? for help)")
    user.sees(b"web01 login: ")  # the banner
    user.told("you hold the write lock")
    user.type(b"root\r")
    user.sees(b"web01 login: root\r")  # the fake echoes what reached it
    user.type(b"\x1db")
    user.told("send a break? [y/N]")
    user.type(b"n")
    user.told("no break sent")
    user.type(b"\x1dby")
    user.told("break sent by admin")
    user.type(b"\x1d\x1d")  # Ctrl-] twice: one literal Ctrl-]
    user.sees(b"root\r\x1d")
    user.type(b"\x1d?")
    user.told("take it over from its holder (admin)")
    user.type(b"\x1d.")
    assert user.exits() == 0
    assert b"[rackhand]" not in user.out  # notices stay off stdout
    console = _device(fake)
    assert console.written == [b"root\r", b"\x1d"]
    assert console.breaks == 1

    script = [RACKHAND, "console", "web01"]  # stdin from a script: its end leaves once quiet
    done = subprocess.run(script, env=env, input=b"ls\r", capture_output=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"web01 login: root\r\x1dls\r"  # the scrollback, then the echo
    assert console.written[-1] == b"ls\r"


def test_write_lock_read_only_and_hangup(env: dict[str, str], fake: FakeDriver) -> None:
    alice = Attached(env, "web01")
    alice.told("you hold the write lock")
    bob = Attached(env, "web01")
    bob.told("the write lock is held by admin since ")  # told as bob arrives
    bob.type(b"uptime\r")
    bob.told("read-only: in use by admin since ")
    bob.told("Ctrl-] w to take it when free")
    bob.type(b"\x1dw")
    bob.told("in use by admin since ")
    bob.told("Ctrl-] W takes it over (admin)")
    watcher = Attached(env, "web01", "--read-only")
    watcher.told("connected to web01")
    watcher.type(b"rm -rf /\r\x1dw")
    watcher.told("read-only: you joined with --read-only")
    alice.told("admin joined (read-only)")
    bob.type(b"\x1dW")  # bob is an admin too: he takes it over
    bob.told("you hold the write lock, taken over")
    alice.told("the write lock is held by admin since ")
    bob.type(b"\x1dr")
    alice.told("nobody holds the write lock (Ctrl-] w to take it)")
    watcher.told("nobody holds the write lock\r\n")  # no hint for a read-only viewer
    alice.type(b"\x1dq")
    assert alice.exits() == 0
    bob.told("admin left")
    bob.type(b"\x1dw")
    bob.told("you hold the write lock\r\n")
    bob.type(b"uptime\r")
    watcher.sees(b"uptime\r")  # every viewer sees the output
    bob.type(b"\x04\x04")  # the fake device hangs up: an end nobody asked for
    for viewer in (bob, watcher):
        viewer.told("console closed (device)")
        assert viewer.exits() == 1
    assert _device(fake).written == [b"uptime\r", b"\x04\x04"]


def test_a_console_that_cannot_open_exits_1_with_the_api_message(env: dict[str, str]) -> None:
    def run(*args: str) -> subprocess.Popen[str]:
        command = [RACKHAND, "console", *args]
        return subprocess.Popen(command, env=env, stdout=PIPE, stderr=PIPE, text=True)

    unknown, no_path = run("nope"), run("web01", "--via", "console_port")  # a 422, not usage
    out, err = unknown.communicate(timeout=WAIT)
    assert unknown.returncode == 1
    assert "error (NotFound): no device 'nope'" in err
    assert out == ""
    err = no_path.communicate(timeout=WAIT)[1]
    assert no_path.returncode == 1
    assert "web01 has no console path" in err


def _winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_raw_mode_on_a_terminal_restored_on_leave_and_on_sigterm(
    env: dict[str, str], fake: FakeDriver
) -> None:
    main, tty = os.openpty()
    _winsize(tty, 100, 30)
    cooked = termios.tcgetattr(tty)
    screen = bytearray()

    def attach() -> subprocess.Popen[bytes]:
        plain = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.Popen(
            [RACKHAND, "console", "web01"], env=plain, stdin=tty, stdout=tty, stderr=tty
        )

    def shows(wanted: bytes) -> bool:
        if select.select([main], [], [], 0.05)[0]:
            screen.extend(os.read(main, 4096))
        return wanted in screen

    try:
        process = attach()
        _until(lambda: shows(b"you hold the write lock"), f"the writer; screen: {screen!r}")
        lflag = termios.tcgetattr(tty)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
        _until(lambda: _device(fake).sizes == [(100, 30)], "the terminal's size")
        os.write(main, b"root\r")  # raw: no line editing, no \r -> \n
        _until(lambda: _device(fake).written == [b"root\r"], "the keys")
        _winsize(tty, 120, 40)
        process.send_signal(signal.SIGWINCH)
        _until(lambda: _device(fake).sizes[-1:] == [(120, 40)], "the resize")
        os.write(main, b"\x1d.")
        assert process.wait(timeout=WAIT) == 0
        assert termios.tcgetattr(tty) == cooked

        screen.clear()
        process = attach()
        _until(lambda: shows(b"you hold the write lock"), f"the writer; screen: {screen!r}")
        assert termios.tcgetattr(tty) != cooked
        process.terminate()
        assert process.wait(timeout=WAIT) == 1
        assert termios.tcgetattr(tty) == cooked
    finally:
        os.close(main)
        os.close(tty)
