"""OpenIPMI `ipmi_sim` BMCs on 127.0.0.1, one process each, for tests and measurements.

`ipmi_sim` is an independent implementation of the BMC side, so it checks our client against
someone else's reading of the spec. Power and boot go through a `chassis_control` shell script
that keeps them in files of the BMC's directory, and logs every change, so a test reads what
the BMC really did, and how many times. Needs Debian's `openipmi` package (`make peers`).

A health BMC (`health=True`) also has sensors, a System Event Log and FRU 0, as
`sim.openipmi_health` declares them, and an emulator console on a TCP port of 127.0.0.1 (the
lan.conf `console` line: one command a line, answered before the next `> ` prompt), through
which a test changes readings and adds events while the BMC runs (anyone on the machine can:
the console asks for no password, so it is for tests only).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sim.openipmi_health import (
    DiscreteSensor,
    SelEvent,
    ThresholdSensor,
    set_reading_command,
    set_state_command,
)
from sim.openipmi_health import emulation as health_emulation

# The power-control program ipmi_sim popen()s as `SCRIPT DIR get power` (answer `power:1`) and
# `SCRIPT DIR set power "0"`. A power cycle is `set power 0`, then `set power 1` 1 s later,
# done by ipmi_sim itself. `read` instead of `cat`: one fork fewer on every status query. A
# `stall` file makes the next change hang, and ipmi_sim with it (it waits for the program).
_CHASSIS_CONTROL = """#!/bin/sh
dir=$1 op=$2
shift 2
case $op in
get)
    for parm; do
        case $parm in
        power) read -r value < "$dir/power"; echo "power:$value" ;;
        boot) read -r value < "$dir/boot"; echo "boot:$value" ;;
        *) echo "unknown parameter $parm"; exit 1 ;;
        esac
    done ;;
set)
    echo "$*" >> "$dir/changes"
    if [ -e "$dir/stall" ]; then
        read -r seconds < "$dir/stall"; rm -f "$dir/stall"; sleep "$seconds"
    fi
    while [ $# -ge 2 ]; do
        case $1 in
        power) echo "$2" > "$dir/power" ;;
        shutdown) echo 0 > "$dir/power" ;;
        boot) echo "$2" > "$dir/boot" ;;
        reset|identify) ;;
        *) echo "unknown parameter $1"; exit 1 ;;
        esac
        shift 2
    done ;;
*) exit 1 ;;
esac
"""

# ipmi_sim stops reading this at the first command that fails, saying nothing with `-n`.
_ADD_BMC = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
"""
_ENABLE_BMC = "mc_enable 0x20\n"

_LAN_CONF = """name "{name}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid {guid}
  endlan
  chassis_control "{chassis_control}"
  user 2 true "{user}" "{password}" admin 10 md5
{sol}{console}"""

# IPMI 1.5 Get Channel Authentication Capabilities, outside a session: any BMC answers it.
_PING = bytes.fromhex("0600ff07000000000000000000092018c88100388e04b5")
_START_TIMEOUT = 10.0
_PROMPT = b"> "
_CONSOLE_TIMEOUT = 5.0


class EmulatorError(RuntimeError):
    """ipmi_sim refused an emulator command, or the BMC has no console to send it to."""


@dataclass(frozen=True, eq=False)
class Bmc:
    """One running ipmi_sim and the files its chassis_control program keeps."""

    address: str
    port: int
    username: str
    password: str
    directory: Path
    process: subprocess.Popen[bytes]
    console_port: int | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"

    def power(self) -> str:
        """`on` or `off`, as the BMC last set it."""
        return "on" if (self.directory / "power").read_text().strip() == "1" else "off"

    def boot(self) -> str:
        """The boot device as ipmi_sim names it: none, pxe, default (disk), cdrom or bios."""
        return (self.directory / "boot").read_text().strip()

    def changes(self) -> list[str]:
        """Every `set` the BMC ran, oldest first, e.g. `power 0`, `reset 1`, `boot bios`."""
        path = self.directory / "changes"
        return path.read_text().splitlines() if path.exists() else []

    def stall(self, seconds: float) -> None:
        """Make the next change hang `seconds` once logged; the BMC answers nothing meanwhile."""
        (self.directory / "stall").write_text(f"{seconds}\n")

    def set_power(self, on: bool) -> None:
        """Set the power as if someone pressed the button (not logged as a change)."""
        (self.directory / "power").write_text("1\n" if on else "0\n")

    def reset(self) -> None:
        """Back to as started: off, boot device default, no change logged, no stall pending."""
        _fresh_state(self.directory)

    def emulate(self, command: str) -> str:
        """Run one ipmi_sim emulator command (`man ipmi_sim_cmd`) on a health BMC; its output.

        Raises `EmulatorError` when ipmi_sim answers with an error (a line starting `**`).
        """
        if self.console_port is None:
            raise EmulatorError("only a health BMC has an emulator console")
        with socket.create_connection((self.address, self.console_port), _CONSOLE_TIMEOUT) as con:
            _until_prompt(con)  # after telnet's option offers
            con.sendall(b"noecho\n")
            _until_prompt(con)
            con.sendall(command.encode() + b"\n")
            answer = _until_prompt(con).decode().replace("\r", "").strip()
        if any(line.startswith("**") for line in answer.splitlines()):
            raise EmulatorError(f"{command!r}: {answer}")
        return answer

    def set_sensor(self, sensor: ThresholdSensor, reading: float, *, event: bool = True) -> None:
        """Set an analog sensor's reading; with `event`, ipmi_sim logs in the SEL an assertion
        for each threshold newly crossed and a deassertion for each one come back from.
        """
        self.emulate(set_reading_command(sensor, reading, event=event))

    def set_sensor_state(
        self, sensor: DiscreteSensor, offset: int, asserted: bool, *, event: bool = True
    ) -> None:
        """Assert or deassert one state of a discrete sensor (e.g. `PSU_FAILURE`); with `event`,
        a change is logged in the SEL.
        """
        self.emulate(set_state_command(sensor, offset, asserted, event=event))

    def add_sel_event(self, event: SelEvent) -> int:
        """Add a record to the SEL as if a sensor had sent it; its record ID."""
        answer = self.emulate(event.command())
        return int(answer.rsplit(" ", 1)[1])  # "Added record N"


@contextlib.contextmanager
def openipmi_fleet(
    count: int,
    base_port: int | None = None,
    user: str = "admin",
    password: str = "password",
    workdir: Path | None = None,
    sol: str | None = None,
    health: bool = False,
) -> Iterator[list[Bmc]]:
    """Start `count` ipmi_sim BMCs, powered off; kill them all on the way out, whatever happens.

    `sol` ("tcp:HOST:PORT") gives each BMC a serial port for SOL: ipmi_sim connects to that TCP
    address (again and again until something listens), one connection per BMC.

    `health` gives each the sensors, SEL and FRU of `sim.openipmi_health` and an emulator
    console (`Bmc.emulate`, `Bmc.set_sensor`, ...) on a free TCP port.

    Ports are free UDP ports from `base_port` up, or any the kernel offers. A port someone else
    took between the check and ipmi_sim's bind (ipmi_sim does not fail then: it shares the port)
    is detected and that BMC is started again elsewhere.
    """
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ipmi_sim-")))
        script = workdir / "chassis_control"
        script.write_text(_CHASSIS_CONTROL)
        script.chmod(0o755)
        emulation = workdir / "bmc.emu"
        emulation.write_text(_ADD_BMC + (health_emulation() if health else "") + _ENABLE_BMC)
        launched: list[Bmc] = []
        stack.callback(_kill, launched)
        bmcs: list[Bmc] = []
        next_port = base_port
        for _ in range(3):
            if len(bmcs) == count:
                break
            ports = free_udp_ports(count - len(bmcs), next_port)
            next_port = None if base_port is None else max(ports) + 1
            first = len(launched)
            consoles = _free_tcp_ports(len(ports)) if health else [None] * len(ports)
            for port, console in zip(ports, consoles, strict=True):
                launched.append(
                    _start(workdir, script, emulation, port, user, password, sol, console)
                )
            bmcs.extend(_keep_listening(launched[first:]))
        if len(bmcs) < count:
            raise RuntimeError(f"only {len(bmcs)} of {count} ipmi_sim BMCs came up")
        yield bmcs


def free_udp_ports(count: int, base_port: int | None = None) -> list[int]:
    """`count` UDP ports on 127.0.0.1 nobody listens on now: from `base_port` up, or any."""
    found: list[int] = []
    with contextlib.ExitStack() as stack:
        port = base_port
        while len(found) < count:
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            try:
                probe.bind(("127.0.0.1", port or 0))
            except OSError:
                if port is None or port >= 65535:
                    raise
            else:
                found.append(probe.getsockname()[1])
            if port is not None:
                port += 1
    return found


def _start(
    workdir: Path,
    script: Path,
    emulation: Path,
    port: int,
    user: str,
    password: str,
    sol: str | None = None,
    console_port: int | None = None,
) -> Bmc:
    directory = workdir / f"bmc-{port}"
    directory.mkdir()
    _fresh_state(directory)
    state = directory / "state"
    state.mkdir()
    config = directory / "lan.conf"
    config.write_text(
        _LAN_CONF.format(
            name=f"bmc-{port}",
            port=port,
            guid=f"{port:032x}",
            chassis_control=f"{shlex.quote(str(script))} {shlex.quote(str(directory))}",
            user=user,
            password=password,
            sol=f'  sol "{sol}" 115200\n' if sol else "",
            console=f"  console 127.0.0.1 {console_port}\n" if console_port else "",
        )
    )
    command = ["ipmi_sim", "-n", "-c", str(config), "-f", str(emulation), "-s", str(state)]
    with (directory / "ipmi_sim.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Bmc("127.0.0.1", port, user, password, directory, process, console_port)


def _free_tcp_ports(count: int) -> list[int]:
    """`count` TCP ports of 127.0.0.1 free now. One taken before ipmi_sim binds it makes that
    ipmi_sim exit, and the fleet starts that BMC again elsewhere.
    """
    with contextlib.ExitStack() as stack:
        probes = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def _until_prompt(con: socket.socket) -> bytes:
    """What the console says up to its next prompt (without it)."""
    received = b""
    while not received.endswith(_PROMPT):
        chunk = con.recv(4096)
        if not chunk:
            raise EmulatorError(f"the console closed after {received!r}")
        received += chunk
    return received[: -len(_PROMPT)]


def _fresh_state(directory: Path) -> None:
    (directory / "power").write_text("0\n")
    (directory / "boot").write_text("default\n")
    (directory / "changes").unlink(missing_ok=True)
    (directory / "stall").unlink(missing_ok=True)


def _keep_listening(started: list[Bmc]) -> list[Bmc]:
    """The BMCs that answer a ping on their own port; the others are killed."""
    waiting = {bmc.port: bmc for bmc in started}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.05)
        deadline = time.monotonic() + _START_TIMEOUT
        answered: set[int] = set()
        while waiting.keys() - answered and time.monotonic() < deadline:
            for port in waiting.keys() - answered:
                probe.sendto(_PING, ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                while True:
                    _, (_, port) = probe.recvfrom(512)
                    answered.add(port)
    owners = _udp_port_owners()
    good = [bmc for bmc in started if owners.get(bmc.port) == {bmc.process.pid}]
    _kill([bmc for bmc in started if bmc not in good])
    return good


def _udp_port_owners() -> dict[int, set[int]]:
    """UDP port on 127.0.0.1 -> pids of the ipmi_sims bound to it (from /proc).

    ipmi_sim binds with SO_REUSEADDR, so a second one on a taken port binds too, and the two
    then share its datagrams. The sockets are those of this thread's network namespace, which
    a test's thread may have entered (`/proc/net` shows the main thread's).
    """
    inodes: dict[str, int] = {}
    for line in Path("/proc/thread-self/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if address == "0100007F":
            inodes[fields[9]] = int(port, 16)
    owners: dict[int, set[int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() != "ipmi_sim":
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    owners.setdefault(inodes[link[8:-1]], set()).add(int(pid))
    return owners


def _kill(bmcs: list[Bmc]) -> None:
    for bmc in bmcs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bmc.process.pid, signal.SIGKILL)
    for bmc in bmcs:
        bmc.process.wait()
