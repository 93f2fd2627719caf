"""Branch sites in network namespaces: devices the central reaches only through an agent.

A `Branch` is a network namespace joined to this one by a veth pair: `central_address` is
the root-side end (the central listens there for the agent), `address` the end inside. The
simulated devices listen on the namespace's own 127.0.0.1, which no process outside can reach,
and the central's 127.0.0.1 is not the branch's, so an agent inside dials the central over
the veth (and so over TLS). Needs root and iproute2 (`unavailable()` says why not).

    with Branch() as branch:
        fleet = branch.start_fleet(3)  # BMCs, a console server, a PDU on the branch's loopback
        ...  # the central listens on branch.central_address (tests.live.private_ca for TLS)
        agent = branch.run([sys.executable, "-m", ..., f"wss://{branch.central_address}:..."])

Everything a branch started dies with it, even when the test fails; the namespaces of a run
that was killed (`rh-<pid>-<n>` of a dead pid) are removed before the first new one is made.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from sim.console_server import Dialect
from sim.control import FleetControl
from sim.openipmi import Bmc as OpenIpmiBmc
from sim.openipmi import openipmi_fleet
from sim.pdu import PduDialect
from tests.sim.fleet import PASSWORD, ROOT, TIMING, read_lines_until

NAME = re.compile(r"rh-(\d+)-(\d+)")
INSIDE_LINK = "eth0"  # the branch's end of the veth, as a branch machine would name its uplink
LOOPBACK = "127.0.0.1"
USER = "admin"
CIPHER_SUITE = 3  # the suite both our BMCs and ipmi_sim offer
FIRST_BMC_PORT = 16230
CLONE_NEWNET = 0x40000000
STOP_SECONDS = 5.0
# Serialises the choice of a /30 between the processes of a run (xdist workers).
LOCK = Path(tempfile.gettempdir()) / "rackhand-branches.lock"

P = ParamSpec("P")
T = TypeVar("T")

_numbers = itertools.count()


class BranchError(RuntimeError):
    """A branch could not be set up (an `ip` command failed, no free /30 was left)."""


class BmcAddress(Protocol):
    """Where a BMC listens and who may log in: our simulated BMCs and ipmi_sim's alike."""

    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...


@dataclass(frozen=True)
class SimBmc:
    """One simulated BMC of a branch fleet (IPMI 2.0 with SOL), as its catalogue path needs."""

    address: str
    port: int
    username: str
    password: str
    cipher_suite: int = CIPHER_SUITE


@dataclass(frozen=True)
class SshBox:
    """A console server or PDU of a branch fleet, as its catalogue `ssh` path needs."""

    name: str
    kind: str  # sim.fleet.CONSOLE_SERVER or sim.fleet.PDU
    dialect: str
    address: str
    port: int
    username: str
    password: str
    host_key: str  # SHA256:… as `ssh-keygen -lf` prints it
    public_key: str


@dataclass(frozen=True)
class ConsoleWire:
    """The console-server port a machine's serial line is wired to."""

    server: str
    port: int
    label: str


@dataclass(frozen=True)
class OutletWire:
    """A PDU outlet feeding a machine."""

    pdu: str
    outlet: int


@dataclass(frozen=True)
class BranchMachine:
    """A simulated machine: its BMC, console port and outlets."""

    name: str
    bmc: SimBmc
    console: ConsoleWire | None
    outlets: tuple[OutletWire, ...]


@dataclass
class BranchFleet:
    """A `python -m sim` fleet running inside a branch; `control` talks to it from inside."""

    machines: list[BranchMachine]
    boxes: list[SshBox]
    control: FleetControl
    process: subprocess.Popen[bytes]

    def box(self, name: str) -> SshBox:
        """The console server or PDU of that name (KeyError if none)."""
        for box in self.boxes:
            if box.name == name:
                return box
        raise KeyError(name)

    def stop(self) -> int | None:
        """SIGTERM, as an operator would; the exit code (None if it had to be killed)."""
        self.control.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()


def unavailable() -> str | None:
    """Why this machine cannot host branches, for `pytest.mark.skipif`; None when it can."""
    if os.geteuid() != 0:
        return "branch tests need root: they create network namespaces"
    if shutil.which("ip") is None:
        return "branch tests need iproute2's `ip` (apt-get install iproute2)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable here: {probe.stderr.strip()}"
    return None


class Branch:
    """A branch site's network namespace, its veth link to this one, and what runs inside."""

    def __init__(self) -> None:
        _sweep_once()
        number = next(_numbers)
        self.name = f"rh-{os.getpid()}-{number}"
        self.link = self.name  # the veth's root-side end
        self.network = _create(self.name, number)
        self.central_address = str(self.network[1])
        self.address = str(self.network[2])
        self._processes: list[subprocess.Popen[Any]] = []
        self._stack = contextlib.ExitStack()
        self._thread = ThreadPoolExecutor(1, self.name, _enter_namespace, (self.name,))
        self._next_bmc_port = FIRST_BMC_PORT

    def __enter__(self) -> Branch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, args: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside the branch (`ip netns exec`); it is killed at `close()`."""
        process: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *args], **popen_kwargs
        )
        self._processes = [*(p for p in self._processes if p.returncode is None), process]
        return process

    def execute(
        self, args: Sequence[str], timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the branch to its end; its output as text."""
        process = self.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def inside(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call `function` here, in a thread that entered the branch's namespace.

        The sockets it creates stay in the branch whichever thread uses them later (hand one
        to asyncio with `sock=`), as do the processes it starts.
        """
        return self._thread.submit(function, *args, **kwargs).result()

    def ipmitool(
        self, bmc: BmcAddress, *command: str, suite: int = CIPHER_SUITE, tries: int = 4
    ) -> subprocess.CompletedProcess[str]:
        """`ipmitool -I lanplus` run inside the branch against one of its BMCs."""
        target = ["-H", bmc.address, "-p", str(bmc.port), "-U", bmc.username, "-P", bmc.password]
        options = ["-C", str(suite), "-N", "1", "-R", str(tries)]
        return self.execute(["ipmitool", "-I", "lanplus", *target, *options, *command])

    def start_fleet(
        self,
        count: int = 3,
        *extra: str,
        names: Sequence[str] | None = None,
        password: str = PASSWORD,
        console_dialect: Dialect = Dialect.OPENGEAR,
        pdu_dialect: PduDialect = PduDialect.RARITAN_PX,
        base_port: int | None = None,
    ) -> BranchFleet:
        """Start our simulated fleet inside the branch, on its 127.0.0.1.

        `count` BMCs with SOL (machines `node1`… unless `names`), one console server whose
        ports 1… are the machines' serial lines and one PDU whose outlets 1… feed them; fast
        power timings. `extra` are more `python -m sim` options. Stopped at `close()`.
        """
        names = list(names or (f"node{n}" for n in range(1, count + 1)))
        first = base_port or self._next_bmc_port
        self._next_bmc_port = max(self._next_bmc_port, first + count)
        command = [sys.executable, "-m", "sim", "--count", str(count), "--base-port", str(first),
                   "--host", LOOPBACK, "--user", USER, "--password", password, "--names",
                   ",".join(names), "--control-port", "0", "--wiring", "--stop-with-stdin",
                   "--console-servers", "1", "--console-ports", str(count), "--console-dialect",
                   console_dialect, "--pdus", "1", "--pdu-outlets", str(count), "--pdu-dialect",
                   pdu_dialect, "--pdu-cycle-delay", "0.3", *TIMING, *extra]  # fmt: skip
        log = Path(self._stack.enter_context(tempfile.TemporaryDirectory())) / "sim.log"
        with log.open("wb") as errors:
            process = self.run(
                command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
            )
        lines = read_lines_until(process, b"listening: ", deadline=time.monotonic() + 30)
        if not lines[-1].startswith(b"listening: "):
            process.kill()
            process.wait()
            raise BranchError(f"the fleet did not start in {self.name}: {log.read_text()}")
        said = dict(line.decode().split(": ", 1) for line in lines if b": " in line)
        control_port = int(said["control"].rsplit(":", 1)[1])
        control = self.inside(FleetControl, LOOPBACK, control_port)
        fleet = _fleet(json.loads(said["wiring"]), USER, password, control, process)
        self._stack.callback(fleet.stop)
        return fleet

    def start_ipmi_sim(
        self,
        count: int = 1,
        *,
        user: str = USER,
        password: str = PASSWORD,
        sol: str | None = None,
        base_port: int | None = None,
    ) -> list[OpenIpmiBmc]:
        """Start OpenIPMI `ipmi_sim` BMCs inside the branch, on its 127.0.0.1 (powered off).

        As `sim.openipmi.openipmi_fleet` (`sol="tcp:127.0.0.1:PORT"` is in the branch too);
        their power and boot files are read from here. Killed at `close()`.
        """
        bmcs = openipmi_fleet(count, base_port, user, password, sol=sol)
        return self.inside(self._stack.enter_context, bmcs)

    def close(self) -> None:
        """Stop everything inside, then delete the namespace and the veth (idempotent)."""
        try:
            self._stack.close()
        finally:
            try:
                self._stop_processes()
            finally:
                self._thread.shutdown(wait=True)
                _destroy(self.name)

    def _stop_processes(self) -> None:
        """SIGTERM what we started (a grace period to finish), then SIGKILL all inside."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        _kill_inside(self.name)
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_SECONDS)


def sweep_leaked(*, ours: bool = False) -> None:
    """Remove the namespaces and veths `rh-<pid>-<n>` whose process is dead (a killed run's).

    `ours`: this process's too (only right for one that has not made a branch yet).
    """
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    namespaces = [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]
    links = [link["ifname"] for link in _ip_json("link", "show", "type", "veth")]
    for name in {*namespaces, *links}:
        if _leaked(name, ours):
            if name in namespaces:
                _kill_inside(name)
            _destroy(name)


def _leaked(name: str, ours: bool) -> bool:
    """A branch's name whose process is dead (or is this one, with `ours`)."""
    match = NAME.fullmatch(name)
    if match is None:
        return False
    pid = int(match[1])
    return (ours and pid == os.getpid()) or not _alive(pid)


@functools.cache
def _sweep_once() -> None:
    sweep_leaked(ours=True)  # before this process made any: a dead one with our pid left them


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _create(name: str, number: int) -> IPv4Network:
    """The namespace with `lo` up and a veth to it; the veth's /30 (.1 here, .2 inside)."""
    _ip("netns", "add", name)
    try:
        with LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            network = _free_network(os.getpid(), number)
            _ip_batch(
                [], f"link add {name} type veth peer name {INSIDE_LINK} netns {name}",
                f"addr add {network[1]}/{network.prefixlen} dev {name}", f"link set {name} up",
            )  # fmt: skip
        _ip_batch(
            ["-n", name], f"addr add {network[2]}/{network.prefixlen} dev {INSIDE_LINK}",
            f"link set {INSIDE_LINK} up", "link set lo up",
        )  # fmt: skip
    except BaseException:
        _destroy(name)
        raise
    return network


def _free_network(pid: int, number: int) -> IPv4Network:
    """A 10.X.Y.0/30 no route here overlaps, from one the pid and the counter pick.

    Other processes' branches hold the /30s of their veths, so the routes say what is taken;
    the caller holds `LOCK` until its veth has the address.
    """
    taken = [
        ipaddress.ip_network(route["dst"], strict=False)
        for route in _ip_json("-4", "route", "show", "table", "all")
        if route.get("dst", "default") != "default"
    ]
    start = (pid * 64 + number) % 65536
    for step in range(65536):
        index = (start + step) % 65536
        candidate = IPv4Network(f"10.{index >> 8}.{index & 0xFF}.0/30")
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise BranchError("every 10.X.Y.0/30 overlaps a route of this machine")


def _destroy(name: str) -> None:
    """Delete the veth (a socket left open inside would keep the namespace, and so it, alive)
    and the namespace; either may be gone already."""
    for command in (["link", "del", name], ["netns", "del", name]):
        subprocess.run(["ip", *command], capture_output=True, check=False)


def _kill_inside(name: str) -> None:
    """SIGKILL every process in the namespace (ours and whatever they started)."""
    listing = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
    )
    for pid in map(int, listing.stdout.split()):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _enter_namespace(name: str) -> None:
    """Move the calling thread (only) into the namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {name}: {os.strerror(error)}")
    finally:
        os.close(descriptor)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BranchError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _ip_batch(options: list[str], *commands: str) -> None:
    """Several `ip` commands in one process (setup stays well under a second)."""
    script = "".join(f"{command}\n" for command in commands)
    done = subprocess.run(
        ["ip", *options, "-batch", "-"], input=script, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BranchError(f"ip {' '.join(options)} -batch: {done.stderr.strip()}\n{script}")


def _ip_json(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BranchError(f"ip -j {' '.join(args)}: {done.stderr.strip()}")
    found: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    return found


def _fleet(
    wiring: dict[str, Any],
    user: str,
    password: str,
    control: FleetControl,
    process: subprocess.Popen[bytes],
) -> BranchFleet:
    """The fleet's `wiring:` line as what a catalogue needs."""
    boxes = [
        SshBox(**{field.name: box[field.name] for field in fields(SshBox)})
        for box in wiring["devices"]
    ]
    machines = [
        BranchMachine(
            machine["name"],
            SimBmc(LOOPBACK, machine["bmc_port"], user, password),
            ConsoleWire(**machine["console"]) if machine["console"] else None,
            tuple(OutletWire(**outlet) for outlet in machine["pdu"]),
        )
        for machine in wiring["machines"]
    ]
    return BranchFleet(machines, boxes, control, process)
