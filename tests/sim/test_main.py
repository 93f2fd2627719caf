"""`python -m sim` as its users meet it: machine names, what it prints, how it stops."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import asyncssh

from tests.sim.console import free_ports
from tests.sim.fleet import PASSWORD, ROOT, launch, read_lines_until

SSH = ("--console-servers", "1", "--console-ports", "2", "--pdus", "1", "--pdu-outlets", "2")


def test_a_named_machine_greets_by_its_name_on_its_console_port() -> None:
    fleet = launch(2, "--names", "web01", *SSH, "--console-dialect", "opengear")
    try:
        wiring = fleet.control.wiring()
        machines = wiring["machines"]
        assert [m["name"] for m in machines] == ["web01", f"node{fleet.base + 1}"]
        assert machines[0]["console"] == {"server": "cs1", "port": 1, "label": "web01"}
        box = next(d for d in wiring["devices"] if d["name"] == "cs1")
        power_on = partial(fleet.control.set_power, fleet.base, "on")
        seen = asyncio.run(_console_until(box, "port01", b"web01 login: ", power_on))
        assert b"Rackhand SimOS 1.0 web01 ttyS0" in seen
    finally:
        assert fleet.stop() == 0


def test_the_ssh_devices_take_one_line_and_the_wiring_only_when_asked() -> None:
    process, lines = _start(*SSH)
    try:
        assert not any(line.startswith(b"wiring: ") for line in lines)
        ssh = next(line.decode() for line in lines if line.startswith(b"ssh: "))
        assert ssh.startswith("ssh: 1 console server, 1 PDU on 127.0.0.1:")
        assert PASSWORD not in ssh
    finally:
        process.terminate()
        assert process.wait(10) == 0
    assert process.stderr is not None
    assert b"Warning" not in process.stderr.read()  # asyncssh's import is quiet


def test_the_wiring_line_for_programs_and_stopping_when_stdin_closes() -> None:
    process, lines = _start(*SSH, "--wiring", "--stop-with-stdin")
    try:
        line = next(line for line in lines if line.startswith(b"wiring: "))
        wiring = json.loads(line.removeprefix(b"wiring: "))
        assert [d["name"] for d in wiring["devices"]] == ["cs1", "pdu1"]
        assert {d["password"] for d in wiring["devices"]} == {PASSWORD}
        assert not any(line.startswith(b"ssh: ") for line in lines)
    finally:
        assert process.stdin is not None
        process.stdin.close()  # as when the process that started it dies
        assert process.wait(10) == 0


def _start(*options: str) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """`python -m sim` with two machines and `options`; its lines up to `listening:`."""
    base = free_ports(2)
    command = [sys.executable, "-m", "sim", "--count", "2", "--base-port", str(base)]
    process = subprocess.Popen(
        [*command, "--password", PASSWORD, *options],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = read_lines_until(process, b"listening: ", deadline=time.monotonic() + 30)
    assert lines[-1].startswith(b"listening: "), lines
    return process, lines


async def _console_until(
    box: dict[str, Any], port: str, wanted: bytes, act: Callable[[], object]
) -> bytes:
    """A console server port's output until `wanted`, after `act` (run in a thread: it blocks)."""
    async with asyncssh.connect(
        box["address"],
        box["port"],
        username=f"{box['username']}:{port}",
        password=box["password"],
        known_hosts=([asyncssh.import_public_key(box["public_key"])], [], []),
        client_keys=None,
    ) as conn:
        process = await conn.create_process(term_type="xterm", encoding=None)
        await asyncio.to_thread(act)
        seen = b""
        async with asyncio.timeout(15):
            while wanted not in seen:
                chunk = await process.stdout.read(4096)
                assert chunk, f"EOF before {wanted!r}; got {seen!r}"
                seen += chunk
        return seen
