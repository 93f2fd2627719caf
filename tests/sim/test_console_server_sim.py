"""The simulated console servers against real clients: asyncssh's and OpenSSH's `ssh`."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sim.console_server import ESCAPES, ConsoleServer, Dialect, Escape, EscapeReader
from sim.serial import SerialLine
from sim.ssh import host_key, public_line
from tests.sim.aio import run, until
from tests.sim.fleet import openssh

PASSWORD = "pw-for-tests"
LABELS = ("web01", "web02", "db01", "db02")

Client = asyncssh.SSHClientProcess[bytes]


class Typed:
    """What reached the machines' side of the lines: bytes per port."""

    def __init__(self, server: ConsoleServer) -> None:
        self.bytes = {number: bytearray() for number in server.ports}
        for number, port in server.ports.items():
            port.line.on_input(self.bytes[number].extend)


@asynccontextmanager
async def console_server(dialect: str, key_dir: Path | None = None) -> AsyncIterator[ConsoleServer]:
    """A console server of four ports on a free port, labelled web01, web02, db01, db02."""
    server = ConsoleServer("cs1", dialect, 4, {"admin": PASSWORD}, host_key("cs1", key_dir))
    for number, label in enumerate(LABELS, 1):
        server.wire(number, label, SerialLine())
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close()


def connect(server: ConsoleServer, login: str, password: str = PASSWORD) -> Any:
    """An asyncssh connection with the server's host key pinned."""
    trusted = asyncssh.import_public_key(public_line(server.key))
    return asyncssh.connect(
        "127.0.0.1",
        server.port,
        username=login,
        password=password,
        known_hosts=([trusted], [], []),
        client_keys=None,
    )


async def open_console(conn: asyncssh.SSHClientConnection) -> Client:
    process: Client = await conn.create_process(
        term_type="xterm-256color", term_size=(80, 25), encoding=None
    )
    return process


async def read_until(process: Client, wanted: bytes, within: float = 5.0) -> bytes:
    """Output up to and including `wanted` (AssertionError with what came if it does not)."""
    seen = b""
    try:
        async with asyncio.timeout(within):
            while wanted not in seen:
                chunk = await process.stdout.read(4096)
                assert chunk, f"EOF before {wanted!r}; got {seen!r}"
                seen += chunk
    except TimeoutError:
        raise AssertionError(f"no {wanted!r} in {seen!r}") from None
    return seen


@pytest.mark.parametrize(
    ("dialect", "login", "number"),
    [
        ("opengear", "admin:port02", 2),
        ("opengear", "admin:ttyS1", 2),  # Opengear counts ttyS from 0
        ("opengear", "admin:db01", 3),
        ("avocent_acs", "admin:ttyS1", 1),  # Cyclades counts ttyS from 1
        ("avocent_acs", "admin:db02", 4),
        ("raritan_sx", "admin:2", 2),
        ("raritan_sx", "admin:web01", 1),
    ],
)
def test_the_user_name_selects_the_port_and_bytes_pass_both_ways(
    dialect: str, login: str, number: int
) -> None:
    async def scenario() -> None:
        async with console_server(dialect) as server, connect(server, login) as conn:
            typed = Typed(server)
            console = await open_console(conn)
            await until(lambda: server.ports[number].holder == "admin")
            server.ports[number].line.emit(b"\x1b[2J POST \xff\xfe\r\n")  # not UTF-8
            assert await read_until(console, b"\r\n") == b"\x1b[2J POST \xff\xfe\r\n"
            console.stdin.write(b"root\r\x1b[12~")
            console.channel.change_terminal_size(132, 43)  # accepted, nothing on the wire
            await until(lambda: bytes(typed.bytes[number]) == b"root\r\x1b[12~")
            assert not any(typed.bytes[other] for other in typed.bytes if other != number)
            assert server.ports[number].sessions == 1

    run(scenario)


@pytest.mark.parametrize(
    ("dialect", "asked"),
    [("opengear", "port05"), ("opengear", "ttyS4"), ("avocent_acs", "ttyS0"), ("raritan_sx", "x")],
)
def test_an_unknown_port_is_refused_with_status_1(dialect: str, asked: str) -> None:
    async def scenario() -> None:
        async with console_server(dialect) as server, connect(server, f"admin:{asked}") as conn:
            result = await conn.run(term_type="xterm", encoding=None)
            assert result.stdout == f"No such port: {asked}\r\n".encode()
            assert result.exit_status == 1

    run(scenario)


def test_a_busy_port_is_refused_and_freed_at_once_when_its_session_ends() -> None:
    async def scenario() -> None:
        async with console_server("opengear") as server:
            async with connect(server, "admin:port02") as first:
                await open_console(first)
                await until(lambda: server.ports[2].holder == "admin")
                async with connect(server, "admin:ttyS1") as second:
                    result = await second.run(term_type="xterm", encoding=None)
                    assert result.stdout == b"Port 2 is in use by admin\r\n"
                    assert result.exit_status == 1
            await until(lambda: server.ports[2].holder is None)  # the connection dropped
            async with connect(server, "admin:web02") as third:
                console = await open_console(third)
                await until(lambda: server.ports[2].holder == "admin")
                console.close()  # the channel alone, the connection stays
                await until(lambda: server.ports[2].holder is None)
            assert server.ports[2].sessions == 2

    run(scenario)


def test_wrong_password_fails_authentication() -> None:
    async def scenario() -> None:
        async with console_server("opengear") as server:
            with pytest.raises(asyncssh.PermissionDenied):
                async with connect(server, "admin:port01", password="nope"):
                    pass
            assert all(port.sessions == 0 for port in server.ports.values())

    run(scenario)


def test_break_requests_and_escapes_at_line_start() -> None:
    async def scenario() -> None:
        async with console_server("opengear") as server, connect(server, "admin:port01") as conn:
            typed = Typed(server)
            console = await open_console(conn)
            await until(lambda: server.ports[1].holder == "admin")
            console.channel.send_break(1000)
            await until(lambda: server.ports[1].line.breaks == 1)
            console.stdin.write(b"~b")  # the very first byte is at line start
            console.stdin.write(b"a~b~.\r~~x\n")  # not at line start; then `~~` is one `~`
            await until(lambda: bytes(typed.bytes[1]) == b"a~b~.\r~x\n")
            assert server.ports[1].breaks == server.ports[1].line.breaks == 2
            console.stdin.write(b"\r~.")
            assert (await console.wait()).exit_status == 0
            assert server.ports[1].holder is None

    run(scenario)


def test_avocent_escape_is_ctrl_e_c() -> None:
    async def scenario() -> None:
        async with console_server("avocent_acs") as server, connect(server, "admin:ttyS3") as conn:
            typed = Typed(server)
            console = await open_console(conn)
            await until(lambda: server.ports[3].holder == "admin")
            console.stdin.write(b"ls\r\x05cb~.\r\x05x\r")
            await until(lambda: bytes(typed.bytes[3]) == b"ls\r~.\r\x05x\r")
            assert server.ports[3].breaks == 1
            console.stdin.write(b"\x05c.")
            assert (await console.wait()).exit_status == 0
            assert server.ports[3].holder is None

    run(scenario)


def test_escape_reader_split_across_writes() -> None:
    prefix, actions = ESCAPES[Dialect.AVOCENT_ACS]
    reader = EscapeReader(prefix, actions)
    assert reader.read(b"\x05") == []
    assert reader.read(b"c") == []
    assert reader.read(b"b") == [Escape.BREAK]
    assert reader.read(b"\x05cz") == [b"\x05cz"]
    assert reader.read(b"\r\x05c.") == [b"\r", Escape.LEAVE]


def test_the_menu_dialect() -> None:
    async def scenario() -> None:
        async with console_server("menu") as server, connect(server, "admin") as conn:
            typed = Typed(server)
            console = await open_console(conn)
            prompt = b"Type 'q' to quit, a valid option[1-4], or anything else to refresh :"
            menu = await read_until(console, prompt)
            assert b"  1: web01\r\n  2: web02\r\n  3: db01\r\n  4: db02\r\n" in menu
            console.stdin.write(b"9\r")
            await read_until(console, prompt)  # out of range: the menu again
            console.stdin.write(b"3\r\n")
            await read_until(console, b"\r\nConnected to port 3\r\n")
            await until(lambda: server.ports[3].holder == "admin")
            server.ports[3].line.emit(b"login: ")
            await read_until(console, b"login: ")
            console.stdin.write(b"root\r")
            console.channel.send_break(300)
            await until(lambda: bytes(typed.bytes[3]) == b"root\r" and server.ports[3].breaks == 1)
            console.stdin.write(b"~.")
            assert (await console.wait()).exit_status == 0
        async with console_server("menu") as server, connect(server, "admin") as conn:
            result = await conn.run(term_type="xterm", input=b"q\r", encoding=None)
            assert result.exit_status == 0

    run(scenario)


def test_opengear_port_chooser_and_a_busy_choice() -> None:
    """`user:serial` lists the ports; a busy one is refused without claiming a connection."""

    async def scenario() -> None:
        async with console_server("opengear") as server:
            server.ports[2].holder = "alice"
            async with connect(server, "admin:serial") as conn:
                console = await open_console(conn)
                menu = await read_until(console, b"Select a port (1-4), or q to quit: ")
                assert b"  2: web02\r\n" in menu
                console.stdin.write(b"2\r")
                refused = await read_until(console, b"Port 2 is in use by alice")
                assert b"Connected" not in refused
            async with connect(server, "admin:serial") as conn:
                console = await open_console(conn)
                await read_until(console, b"or q to quit: ")
                console.stdin.write(b"1\r")
                await read_until(console, b"Connected to port 1\r\n")
                await until(lambda: server.ports[1].holder == "admin")

    run(scenario)


def test_openssh_client_pinned_key_port_bytes_break_and_leave(tmp_path: Path) -> None:
    """OpenSSH's ssh: host key pinned, password by SSH_ASKPASS, `~B` = SSH break, `~~.` leaves."""

    keys = tmp_path / "keys"
    stored = host_key("cs1", keys)
    shown = subprocess.run(
        ["ssh-keygen", "-lf", str(keys / "cs1.ed25519")], capture_output=True, text=True, check=True
    ).stdout.split()[1]

    async def scenario() -> None:
        async with console_server("opengear", keys) as server:
            assert server.fingerprint == shown == stored.get_fingerprint()  # the kept key
            typed = Typed(server)
            command, env = openssh(
                tmp_path, server.port, "admin:port02", public_line(server.key), PASSWORD, "-tt"
            )
            ssh = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # no controlling terminal: askpass, never a tty prompt
            )
            assert ssh.stdin is not None
            assert ssh.stdout is not None
            assert ssh.stderr is not None
            try:
                await until(lambda: server.ports[2].holder == "admin", within=10)
                server.ports[2].line.emit(b"web02 login: ")
                assert await asyncio.wait_for(ssh.stdout.readexactly(13), 5) == b"web02 login: "
                ssh.stdin.write(b"root\r~B")  # ssh's own escape: an SSH break request
                await until(lambda: server.ports[2].line.breaks == 1)
                assert bytes(typed.bytes[2]) == b"root\r"
                ssh.stdin.write(b"~~.")  # `~~` passes one `~`: the console server's leave
                await ssh.stdin.drain()
                assert await asyncio.wait_for(ssh.wait(), 10) == 0, await ssh.stderr.read()
                assert server.ports[2].holder is None
            finally:
                if ssh.returncode is None:
                    ssh.kill()
                    await ssh.wait()

    run(scenario)


def test_openssh_client_refused_on_a_busy_port(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with console_server("raritan_sx") as server, connect(server, "admin:1") as conn:
            await open_console(conn)
            await until(lambda: server.ports[1].holder == "admin")
            command, env = openssh(
                tmp_path, server.port, "admin:web01", public_line(server.key), PASSWORD, "-tt"
            )
            ssh = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            out, _ = await asyncio.wait_for(ssh.communicate(), 10)
            assert ssh.returncode == 1
            assert b"Port 1 is in use by admin\r\n" in out

    run(scenario)
