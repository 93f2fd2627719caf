"""The console server driver against the SSH console server simulator, in each dialect.

Ports, bytes both ways, breaks, busy and unknown ports, host keys (pinned, wrong, first use),
passwords, and the bounds on dead and silent servers. A small recording SSH server stands in
where the check is "the client sent nothing": the simulator cannot tell.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

import asyncssh
import pytest

from agents.drivers.base import (
    AuthFailed,
    Busy,
    DeviceTimeout,
    HostKeyMismatch,
    Refused,
    Unreachable,
    Unsupported,
)
from agents.drivers.console_server import ConsoleServerDriver
from agents.drivers.ssh import SshSettings
from agents.protocol import ConsolePortPath, Dialect, IpmiPath, SshTarget
from sim.console_server import ConsoleServer
from sim.serial import SerialLine
from sim.ssh import host_key

USER, PASSWORD = "admin", "s3cret"
DIALECTS = ["opengear", "avocent_acs", "raritan_sx", "menu"]
PORTS = 4


@dataclass
class Box:
    """A simulated console server, a machine's serial line on each port, and a driver."""

    server: ConsoleServer
    typed: dict[int, list[bytes]]
    driver: ConsoleServerDriver
    keys_seen: list[tuple[SshTarget, str]]

    def target(self, **changes: object) -> SshTarget:
        target = SshTarget(
            "127.0.0.1", USER, PASSWORD, Dialect(self.server.dialect), self.server.port,
            self.server.fingerprint,
        )  # fmt: skip
        return replace(target, **changes)  # type: ignore[arg-type]

    def path(self, port: int, **changes: object) -> ConsolePortPath:
        return ConsolePortPath(self.target(**changes), port)

    def line(self, port: int) -> SerialLine:
        return self.server.ports[port].line


def on_box(dialect: str, test: Callable[[Box], Awaitable[None]], timeout: float = 2.0) -> None:
    async def main() -> None:
        server = ConsoleServer("cs1", dialect, PORTS, {USER: PASSWORD}, host_key("cs1"))
        typed: dict[int, list[bytes]] = {}
        for number in server.ports:
            line, typed[number] = SerialLine(), []
            line.on_input(typed[number].append)
            server.wire(number, f"web{number:02d}", line)
        await server.start("127.0.0.1", 0)
        keys_seen: list[tuple[SshTarget, str]] = []
        driver = ConsoleServerDriver(
            on_host_key=lambda target, key: keys_seen.append((target, key)),
            settings=SshSettings(connect_timeout=timeout),
            settle=0.1,
        )
        try:
            await test(Box(server, typed, driver, keys_seen))
        finally:
            await server.close()

    asyncio.run(main())


async def next_output(iterator: AsyncIterator[bytes]) -> bytes:
    async with asyncio.timeout(2):
        return await anext(iterator)


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("it never happened")


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("port", [1, 3])
def test_each_dialect_reaches_the_numbered_port_with_raw_bytes_both_ways(
    dialect: str, port: int
) -> None:
    async def test(box: Box) -> None:
        channel = await box.driver.open_console(box.path(port), cols=120, rows=40)
        assert box.server.ports[port].holder == USER
        assert [p.sessions for p in box.server.ports.values()] == [
            int(n == port) for n in box.server.ports
        ]
        keys = b"\x1b[12~\xff\x00boot\r"  # F2 in VT220, and bytes that are not UTF-8
        await channel.write(keys)
        await eventually(lambda: b"".join(box.typed[port]) == keys)
        iterator = aiter(channel)
        box.line(port).emit(b"\x1b[2J\xb0\xb1BIOS Setup\r\n")
        assert await next_output(iterator) == b"\x1b[2J\xb0\xb1BIOS Setup\r\n"
        await channel.resize(100, 30)  # accepted (and ignored: serial has no size)
        await channel.close()
        await eventually(lambda: box.server.ports[port].holder is None)
        assert all(not box.typed[n] for n in box.server.ports if n != port)

    on_box(dialect, test)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_break_is_an_ssh_break_request_that_reaches_the_port(dialect: str) -> None:
    async def test(box: Box) -> None:
        channel = await box.driver.open_console(box.path(2))
        await channel.send_break()
        await eventually(lambda: box.line(2).breaks > 0)
        assert box.server.ports[2].breaks == 1
        assert box.typed[2] == []  # no escape bytes went to the machine
        await channel.close()

    on_box(dialect, test)


def test_output_ends_when_the_device_closes_the_session() -> None:
    async def test(box: Box) -> None:
        channel = await box.driver.open_console(box.path(1))
        box.line(1).emit(b"login: ")
        await channel.write(b"\r~.")  # the box's own leave escape: it hangs up on us
        received = b""
        async with asyncio.timeout(2):
            async for data in channel:
                received += data
        assert received == b"login: "
        assert box.typed[1] == [b"\r"]
        await channel.close()

    on_box("opengear", test)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_port_in_use_is_busy_and_frees_when_its_session_leaves(dialect: str) -> None:
    async def test(box: Box) -> None:
        first = await box.driver.open_console(box.path(3))
        with pytest.raises(Busy, match=r"port 3 is in use by admin"):
            await box.driver.open_console(box.path(3))
        await first.close()
        await eventually(lambda: box.server.ports[3].holder is None)
        again = await box.driver.open_console(box.path(3))
        await again.close()

    on_box(dialect, test)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_port_the_box_does_not_have_is_refused(dialect: str) -> None:
    async def test(box: Box) -> None:
        with pytest.raises(Refused, match=r"no port 9") as caught:
            await box.driver.open_console(box.path(9))
        assert not isinstance(caught.value, Busy)

    on_box(dialect, test)


def test_first_use_accepts_the_key_and_reports_the_fingerprint_the_box_has() -> None:
    async def test(box: Box) -> None:
        target = box.target(host_key=None)
        channel = await box.driver.open_console(ConsolePortPath(target, 1))
        assert box.keys_seen == [(target, box.server.fingerprint)]
        await channel.close()
        pinned = await box.driver.open_console(box.path(1))  # a pinned key is not reported
        assert len(box.keys_seen) == 1
        await pinned.close()

    on_box("raritan_sx", test)


def test_a_pin_without_padding_or_prefix_matches_too() -> None:
    async def test(box: Box) -> None:
        bare = box.server.fingerprint.removeprefix("SHA256:") + "="
        channel = await box.driver.open_console(box.path(1, host_key=bare))
        await channel.close()

    on_box("opengear", test)


def test_a_different_host_key_is_refused_before_logging_in() -> None:
    other = host_key("impostor").get_fingerprint("sha256")

    async def test(box: Box) -> None:
        logins: list[str] = []
        check = box.server.check_password

        def checking(login: str, password: str) -> bool:
            logins.append(login)
            return check(login, password)

        box.server.check_password = checking  # type: ignore[method-assign]
        with pytest.raises(HostKeyMismatch) as caught:
            await box.driver.open_console(box.path(1, host_key=other))
        message = str(caught.value)
        assert other in message
        assert box.server.fingerprint in message
        assert logins == []
        assert box.server.ports[1].sessions == 0
        assert box.keys_seen == []

    on_box("opengear", test)


class _Recorder(asyncssh.SSHServer):
    """Accepts any password and notes each step a client got to."""

    def __init__(self, steps: list[str]) -> None:
        self.steps = steps

    def begin_auth(self, username: str) -> bool:
        self.steps.append(f"auth {username}")
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        self.steps.append(f"password {password}")
        return True

    def session_requested(self) -> bool:
        self.steps.append("session")
        return False


def test_a_wrong_key_sends_no_user_name_password_or_channel() -> None:
    async def main() -> None:
        steps: list[str] = []
        key = asyncssh.generate_private_key("ssh-ed25519")
        acceptor = await asyncssh.create_server(
            lambda: _Recorder(steps), "127.0.0.1", 0, server_host_keys=[key]
        )
        other = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")
        target = SshTarget("127.0.0.1", USER, PASSWORD, Dialect.MENU, acceptor.get_port(), other)
        try:
            with pytest.raises(HostKeyMismatch, match="host key mismatch"):
                await ConsoleServerDriver().open_console(ConsolePortPath(target, 1))
            await asyncio.sleep(0.05)
            assert steps == []
            right = replace(target, host_key=key.get_fingerprint("sha256"))
            with pytest.raises(Refused):  # the recorder offers no session: it got that far
                await ConsoleServerDriver().open_console(ConsolePortPath(right, 1))
            assert steps == [f"auth {USER}", f"password {PASSWORD}", "session"]
        finally:
            acceptor.close()

    asyncio.run(main())


def test_a_wrong_password_is_auth_failed_naming_the_user() -> None:
    async def test(box: Box) -> None:
        with pytest.raises(AuthFailed, match=r"refused the password for admin \(logging in as"):
            await box.driver.open_console(box.path(2, password="wrong"))
        assert box.server.ports[2].sessions == 0

    on_box("avocent_acs", test)


def test_a_closed_port_is_unreachable_at_once() -> None:
    async def main() -> None:
        with socket.socket() as bound:  # bound, never listening: the kernel refuses
            bound.bind(("127.0.0.1", 0))
            port = bound.getsockname()[1]
            target = SshTarget("127.0.0.1", USER, PASSWORD, Dialect.OPENGEAR, port)
            started = time.monotonic()
            with pytest.raises(Unreachable, match=r"is unreachable: connection refused"):
                await ConsoleServerDriver().open_console(ConsolePortPath(target, 1))
            assert time.monotonic() - started < 1

    asyncio.run(main())


def test_a_silent_server_times_out_within_the_connect_timeout() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # holds the connection, never says a word
            writer.close()

        listener = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        target = SshTarget("127.0.0.1", USER, PASSWORD, Dialect.OPENGEAR, port)
        driver = ConsoleServerDriver(settings=SshSettings(connect_timeout=0.5))
        started = time.monotonic()
        try:
            with pytest.raises(DeviceTimeout, match=r"did not answer within 0.5 s"):
                await driver.open_console(ConsolePortPath(target, 1))
            assert time.monotonic() - started < 1.5
        finally:
            listener.close()

    asyncio.run(main())


def test_paths_and_dialects_it_cannot_use_are_unsupported() -> None:
    async def main() -> None:
        driver = ConsoleServerDriver()
        with pytest.raises(Unsupported, match="ipmi"):
            await driver.open_console(IpmiPath("10.0.0.9", USER, PASSWORD))
        target = SshTarget("10.0.0.9", USER, PASSWORD, Dialect.APC)  # a PDU's
        with pytest.raises(Unsupported, match=r"no console-server driver for dialect 'apc'"):
            await driver.open_console(ConsolePortPath(target, 1))
        pinned = SshTarget("10.0.0.9", USER, PASSWORD, Dialect.OPENGEAR, host_key="MD5:aa:bb")
        with pytest.raises(AuthFailed, match="not an OpenSSH SHA-256 fingerprint"):
            await driver.open_console(ConsolePortPath(pinned, 1))

    asyncio.run(main())
