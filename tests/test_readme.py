"""README's `rackhand` examples, run as printed against `make run`'s `rackhand serve --demo`.

Every `rackhand …` line of README's `sh` code blocks is a test of its own, picked up when the
README changes. Each runs in a scratch folder (files it writes land there; `fleet.csv` and
`fleet.json` are exported from the demo first, so the import examples have something to read)
with `RACKHAND_URL` and an admin `RACKHAND_TOKEN`, stdin closed and HOME a scratch folder too.
It must exit 0, or the code README documents:

- a destructive power action without `--yes` and without a terminal exits 2; it is run again
  with `--yes`, which must exit 0;
- `rackhand serve` is not run again: this module's server is `rackhand serve --demo` itself;
- `rackhand sim …` runs until SIGTERM: it is started, must answer on its last BMC port, and is
  stopped with SIGTERM, which must end it with 0;
- `rackhand console …` without a terminal leaves once stdin has ended and the output is quiet.

The demo's simulators listen on fixed ports (`app/inventory/demo.py`), so only one demo runs at
a time: the module skips (saying why) when another one (a `make run`?) holds them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.cli.power import CONFIRM
from app.inventory.demo import (
    CONSOLE_BOXES,
    DEMO_BMCS,
    FIRST_BMC_PORT,
    FIRST_SSH_PORT,
    HYPERVISORS,
    PDU_BOXES,
)
from sim import rmcp
from sim.__main__ import parse_args as sim_args
from tests.live import RACKHAND, free_port

pytestmark = pytest.mark.xdist_group("readme-demo")  # the demo's simulator ports are fixed

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ADMIN_PASSWORD = "readme-admin-password"
BMC_PORTS = range(FIRST_BMC_PORT, FIRST_BMC_PORT + DEMO_BMCS)
SSH_PORTS = range(
    FIRST_SSH_PORT, FIRST_SSH_PORT + len(CONSOLE_BOXES) + len(PDU_BOXES) + len(HYPERVISORS)
)
PORTS_WAIT = 30.0  # s to wait for another demo to let go of the simulator ports
START_WAIT = 60.0  # s for the server and its simulated fleet to come up
COMMAND_TIMEOUT = 60.0


def readme_commands(text: str | None = None) -> list[str]:
    """The `rackhand …` lines of README's sh code blocks (a trailing `\\` joins lines)."""
    text = README.read_text() if text is None else text
    found = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if line.startswith("rackhand "):
                found.append(line)
    return found


COMMANDS = readme_commands()


def _argv(line: str) -> list[str]:
    """The command's arguments after `rackhand`, as a shell would split them (comments off)."""
    return shlex.split(line, comments=True)[1:]


def _id(line: str) -> str:
    return " ".join(_argv(line))[:60]


@dataclass(frozen=True)
class Demo:
    url: str
    env: dict[str, str]
    cwd: Path
    log: Path

    def run(
        self, argv: list[str], timeout: float = COMMAND_TIMEOUT, **more: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RACKHAND, *argv],
            cwd=self.cwd,
            env=self.env | more,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tcp_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _busy(udp: range, tcp: range = range(0)) -> list[int]:
    return [port for port in udp if not _udp_free(port)] + [
        port for port in tcp if not _tcp_free(port)
    ]


def _pongs(port: int) -> bool:
    """A simulated BMC listens on `port`: it answers an RMCP presence ping."""
    ping = rmcp.RMCP_ASF + rmcp.ASF_IANA + bytes([0x80, 1, 0, 0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(ping, ("127.0.0.1", port))
        try:
            return sock.recv(512) == rmcp.pong(ping)
        except OSError:
            return False


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM as an operator would, then anything of its process group still alive."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # a simulator or worker left behind


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`rackhand serve --demo` on a free port with its own data folder, fleet up, token made."""
    deadline = time.monotonic() + PORTS_WAIT
    while busy := _busy(BMC_PORTS, SSH_PORTS):
        if time.monotonic() > deadline:
            pytest.skip(
                f"the demo's simulator ports are in use ({busy[0]} and {len(busy) - 1} more): "
                "another `rackhand serve --demo` (`make run`?) is running"
            )
        time.sleep(1)
    folder = tmp_path_factory.mktemp("readme")
    cwd, home, log = folder / "cwd", folder / "home", folder / "serve.log"
    cwd.mkdir()
    home.mkdir()
    base = {key: value for key, value in os.environ.items() if not key.startswith("RACKHAND_")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [RACKHAND, "serve", "--demo", "--port", str(port), "--data-dir", str(folder / "var")],
            env=base | {"RACKHAND_ADMIN_PASSWORD": ADMIN_PASSWORD},
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its simulators and workers go with it at the end
        )
    try:
        deadline = time.monotonic() + START_WAIT
        while not (
            _ready(url)
            and _listens(SSH_PORTS[-1])
            and _pongs(BMC_PORTS[0])
            and _pongs(BMC_PORTS[-1])
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`rackhand serve --demo` did not come up:\n{_tail(log)}")
            time.sleep(0.2)
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        answer = httpx.post(f"{url}/api/v1/auth/token", data=login)
        answer.raise_for_status()
        env = base | {
            "RACKHAND_URL": url,
            "RACKHAND_TOKEN": answer.json()["access_token"],
            "RACKHAND_USERNAME": "admin",  # for a command that logs in by itself
            "RACKHAND_PASSWORD": ADMIN_PASSWORD,
            "HOME": str(home),  # nobody's ~/.config/rackhand is read or written
            "XDG_CONFIG_HOME": str(home / ".config"),
            "COLUMNS": "200",
        }
        running = Demo(url, env, cwd, log)
        for form in ("csv", "json"):  # what the import examples read
            exported = running.run(["devices", "export", "--format", form, "-o", f"fleet.{form}"])
            assert exported.returncode == 0, exported.stderr
        yield running
    finally:
        _stop(process)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _report(result: subprocess.CompletedProcess[str], demo: Demo) -> str:
    return (
        f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        f"\n--- server log (tail)\n{_tail(demo.log, 15)}"
    )


def test_the_readme_has_examples_to_run() -> None:
    assert len(COMMANDS) >= 10
    found = readme_commands("```sh\nrackhand a \\\n  --b  # c\nmake run\n```\n")
    assert [_argv(line) for line in found] == [["a", "--b"]]


@pytest.mark.parametrize("line", COMMANDS, ids=[_id(line) for line in COMMANDS])
def test_a_readme_example_runs_against_the_demo(line: str, demo: Demo) -> None:
    argv = _argv(line)
    command = argv[0]
    if command == "serve":
        pytest.skip("this module's server is `rackhand serve --demo` itself")
    if command == "sim":
        _start_and_stop_sim(argv, demo)
        return
    if command == "passwd":
        _change_to_the_same_password(argv, demo)
        return
    destructive = command == "power" and argv[1] in CONFIRM and not {"--yes", "-y"} & set(argv)
    result = demo.run(argv)
    if destructive:
        assert result.returncode == 2, _report(result, demo)
        assert "--yes" in result.stderr
        result = demo.run([*argv, "--yes"])
    assert result.returncode == 0, _report(result, demo)
    for flag in ("-o", "--output"):
        if flag in argv:
            assert (demo.cwd / argv[argv.index(flag) + 1]).is_file()


def _change_to_the_same_password(argv: list[str], demo: Demo) -> None:
    """`passwd` ends the other logins, the demo's token among them: log in again after it."""
    result = demo.run(argv, RACKHAND_NEW_PASSWORD=ADMIN_PASSWORD)
    assert result.returncode == 0, _report(result, demo)
    login = {"username": "admin", "password": ADMIN_PASSWORD}
    answer = httpx.post(f"{demo.url}/api/v1/auth/token", data=login)
    answer.raise_for_status()
    demo.env["RACKHAND_TOKEN"] = answer.json()["access_token"]


def _start_and_stop_sim(argv: list[str], demo: Demo) -> None:
    """Start `rackhand sim …`; it must answer on its last BMC port, then end 0 on SIGTERM."""
    options = sim_args(argv[1:])
    ports = range(options.base_port, options.base_port + options.count)
    if busy := _busy(ports):
        pytest.skip(f"ports {ports.start}-{ports.stop - 1} are in use ({len(busy)} of them)")
    log = demo.cwd / "sim.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [RACKHAND, *argv],
            cwd=demo.cwd,
            env=demo.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_WAIT
        while not _pongs(ports[-1]):
            assert process.poll() is None, f"`rackhand sim` ended:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"`rackhand sim` did not answer:\n{_tail(log)}"
            time.sleep(0.2)
        assert _pongs(ports[0])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, _tail(log)
    finally:
        _stop(process)
