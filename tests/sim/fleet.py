"""A simulated BMC fleet in its own process, and ipmitool against it: shared by the tests."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sim.control import FleetControl
from tests.sim.console import free_ports, free_tcp_ports

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-for-tests"
TIMING = ("--on-delay", "0.2", "--cycle-off", "0.3", "--soft-delay", "0.3")


@dataclass
class RunningFleet:
    process: subprocess.Popen[bytes]
    base: int
    control: FleetControl

    def stop(self) -> int:
        """SIGTERM, as an operator would; the exit code."""
        self.control.close()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(10)


def launch(count: int, *extra: str, base: int | None = None) -> RunningFleet:
    """`python -m sim` on free ports, once it says it is listening."""
    for _ in range(5):
        first = base or free_ports(count)
        command = [sys.executable, "-m", "sim", "--count", str(count), "--base-port", str(first)]
        process = subprocess.Popen(
            [*command, "--password", PASSWORD, "--control-port", "0", *TIMING, *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        lines = read_lines_until(process, b"listening: ", deadline=time.monotonic() + 30)
        if lines[-1].startswith(b"listening: "):
            control_port = int(lines[0].rsplit(b":", 1)[1])
            return RunningFleet(process, first, FleetControl("127.0.0.1", control_port))
        process.kill()
        _, error = process.communicate()
        if b"Address already in use" not in error or base is not None:
            raise RuntimeError(f"the fleet did not start: {error.decode()}")
    raise RuntimeError("no free ports for the fleet")


def read_lines_until(
    process: subprocess.Popen[bytes], prefix: bytes, deadline: float
) -> list[bytes]:
    """Lines of stdout up to the one starting with prefix (or up to EOF or the deadline)."""
    assert process.stdout is not None
    descriptor, buffer = process.stdout.fileno(), b""
    while time.monotonic() < deadline:
        lines = buffer.split(b"\n")
        if any(line.startswith(prefix) for line in lines[:-1]):
            return lines[:-1]
        if select.select([descriptor], [], [], deadline - time.monotonic())[0]:
            chunk = os.read(descriptor, 4096)
            if not chunk:
                break
            buffer += chunk
    return buffer.split(b"\n") or [b""]


def ipmitool(
    port: int, *command: str, suite: int | None = 17, password: str = PASSWORD, tries: int = 4
) -> subprocess.CompletedProcess[str]:
    target = ["-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", "admin", "-P", password]
    cipher = ["-C", str(suite)] if suite else []
    return subprocess.run(
        ["ipmitool", *target, *cipher, "-N", "1", "-R", str(tries), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )


def openssh(
    tmp_path: Path, port: int, login: str, public_key: str, password: str, *options: str
) -> tuple[list[str], dict[str, str]]:
    """The `ssh` command line and environment for login@127.0.0.1:port, host key pinned.

    The password comes from an SSH_ASKPASS script; nothing of the user's ssh config is read.
    """
    known_hosts = tmp_path / f"known_hosts_{port}"
    known_hosts.write_text(f"[127.0.0.1]:{port} {public_key}\n")
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
    askpass.chmod(0o700)
    command = [
        "ssh", "-F", "/dev/null", "-p", str(port),
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "PreferredAuthentications=password",
        "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1",
        "-o", "ConnectTimeout=10",
        *options, f"{login}@127.0.0.1",
    ]  # fmt: skip
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    env.pop("DISPLAY", None)
    return command, env


@contextmanager
def redfish_sim(password: str = "redfish-pw") -> Iterator[tuple[str, str]]:
    """One simulated Redfish BMC (HTTPS) in its own process: its URL and certificate pin."""
    port = free_tcp_ports(1)
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.redfish", "--count", "1", "--base-port", str(port),
         "--password", password],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        fingerprint = process.stdout.readline().decode().split(":", 1)[1].strip()
        assert process.stdout.readline().startswith(b"listening: ")
        yield f"https://127.0.0.1:{port}", fingerprint
    finally:
        process.terminate()
        process.wait(10)
