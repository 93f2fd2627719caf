"""The branch harness (tests/branch.py): devices inside answer only from inside, the central's
veth address is reachable from inside, and nothing of a branch outlives it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from sim.console_server import Dialect
from sim.fleet import CONSOLE_SERVER, PDU
from sim.openipmi import Bmc as OpenIpmiBmc
from tests.branch import BmcAddress, Branch, BranchFleet, BranchMachine, sweep_leaked, unavailable
from tests.live import until

REASON = unavailable()
pytestmark = [
    pytest.mark.xdist_group("netns"),
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]

MACHINES = 2
# IPMI 1.5 Get Channel Authentication Capabilities, outside a session: every BMC answers it.
CHANNEL_AUTH = bytes.fromhex("0600ff07000000000000000000092018c88100388e04b5")
PROBE_SECONDS = 0.5


@dataclass
class Site:
    """A branch with our fleet and an ipmi_sim, and root-side sockets on their port numbers."""

    branch: Branch
    fleet: BranchFleet
    openipmi: OpenIpmiBmc
    held: dict[int, socket.socket]  # port -> a silent UDP socket on the root's 127.0.0.1


@pytest.fixture
def branch() -> Iterator[Branch]:
    with Branch() as site:
        yield site


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """The root namespace holds the BMCs' port numbers on its own 127.0.0.1, so a probe there
    cannot be answered by some other test's BMC: whatever answers came from the branch."""
    with contextlib.ExitStack() as stack:
        held = stack.enter_context(held_udp_ports(MACHINES + 1))
        first = min(held)
        branch = stack.enter_context(Branch())
        fleet = branch.start_fleet(MACHINES, base_port=first)
        (openipmi,) = branch.start_ipmi_sim(1, base_port=first + MACHINES)
        assert openipmi.port == first + MACHINES  # the branch's ports are all free
        yield Site(branch, fleet, openipmi, held)


@contextlib.contextmanager
def held_udp_ports(count: int) -> Iterator[dict[int, socket.socket]]:
    """Bound, never-answering UDP sockets on `count` consecutive ports of 127.0.0.1."""
    for _ in range(50):
        with contextlib.ExitStack() as stack:
            first = int.from_bytes(os.urandom(2), "big") % 20000 + 20000
            held: dict[int, socket.socket] = {}
            try:
                for port in range(first, first + count):
                    held[port] = stack.enter_context(socket.socket(type=socket.SOCK_DGRAM))
                    held[port].bind(("127.0.0.1", port))
            except OSError:
                continue
            yield held
            return
    raise RuntimeError(f"no {count} consecutive free UDP ports")


def answer(address: str, port: int) -> bytes | None:
    """A BMC's answer to CHANNEL_AUTH, or None within PROBE_SECONDS (refused: None at once)."""
    with socket.socket(type=socket.SOCK_DGRAM) as probe:
        probe.settimeout(PROBE_SECONDS)
        try:
            probe.connect((address, port))
            probe.send(CHANNEL_AUTH)
            return probe.recv(512)
        except (TimeoutError, ConnectionRefusedError):
            return None


def received(held: socket.socket) -> bytes:
    held.settimeout(PROBE_SECONDS)
    return held.recv(512)


def ip_json(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    found: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    return found


def ipv4(link: dict[str, Any]) -> list[str]:
    return [address["local"] for address in link["addr_info"] if address["family"] == "inet"]


def namespaces() -> set[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def links() -> set[str]:
    return {str(link["ifname"]) for link in ip_json("link", "show")}


def test_a_branch_is_set_up_in_well_under_a_second() -> None:
    started = time.monotonic()
    with Branch() as branch:
        elapsed = time.monotonic() - started
        assert re.fullmatch(rf"rh-{os.getpid()}-\d+", branch.name)
        inside = {link["ifname"]: link for link in ip_json("-n", branch.name, "addr")}
        (root,) = ip_json("addr", "show", "dev", branch.link)
    assert elapsed < 1.0
    assert branch.network.prefixlen == 30
    assert branch.network.subnet_of(IPv4Network("10.0.0.0/8"))
    assert ipv4(root) == [branch.central_address] == [str(branch.network[1])]
    assert ipv4(inside["eth0"]) == [branch.address] == [str(branch.network[2])]
    assert "UP" in inside["lo"]["flags"]


def test_the_fleet_says_what_the_catalogue_needs(site: Site) -> None:
    fleet = site.fleet
    assert [machine.name for machine in fleet.machines] == ["node1", "node2"]
    console_server, pdu = fleet.box("cs1"), fleet.box("pdu1")
    assert (console_server.kind, console_server.dialect) == (CONSOLE_SERVER, Dialect.OPENGEAR)
    assert pdu.kind == PDU
    for box in (console_server, pdu):
        assert box.address == "127.0.0.1"
        assert box.host_key.startswith("SHA256:")
    first: BranchMachine = fleet.machines[0]
    assert first.console is not None
    assert (first.console.server, first.console.port) == ("cs1", 1)
    assert [(outlet.pdu, outlet.outlet) for outlet in first.outlets] == [("pdu1", 1)]
    assert fleet.control.state(first.bmc.port)["power"] == "off"


def test_bmcs_answer_ipmitool_inside_the_branch(site: Site) -> None:
    bmcs: list[BmcAddress] = [*(machine.bmc for machine in site.fleet.machines), site.openipmi]
    for bmc in bmcs:
        done = site.branch.ipmitool(bmc, "chassis", "power", "status")
        assert done.stdout.strip() == "Chassis Power is off", done.stderr


@pytest.mark.parametrize("which", ["sim", "ipmi_sim"])
def test_bmcs_cannot_be_reached_from_the_root_namespace(site: Site, which: str) -> None:
    port = site.openipmi.port if which == "ipmi_sim" else site.fleet.machines[0].bmc.port
    assert site.branch.inside(answer, "127.0.0.1", port), "the probe itself is answered inside"
    assert answer("127.0.0.1", port) is None
    assert received(site.held[port]) == CHANNEL_AUTH  # the probe reached the root's loopback
    assert answer(site.branch.address, port) is None


def test_ssh_boxes_listen_inside_only(site: Site) -> None:
    box = site.fleet.box("cs1")
    with site.branch.inside(socket.create_connection, (box.address, box.port), 5) as inside:
        assert inside.recv(64).startswith(b"SSH-2.0-")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((site.branch.address, box.port), 5)


def test_the_central_is_reached_on_its_veth_address_not_on_loopback(branch: Branch) -> None:
    client = (
        "import socket, sys\n"
        "with socket.create_connection((sys.argv[1], int(sys.argv[2])), 5) as link:\n"
        "    link.sendall(b'hello from ' + sys.argv[3].encode())\n"
    )
    with socket.create_server((branch.central_address, 0)) as central:
        port = central.getsockname()[1]
        central.settimeout(10)
        done = branch.execute([sys.executable, "-c", client, branch.central_address, str(port),
                               branch.name])  # fmt: skip
        assert done.returncode == 0, done.stderr
        connection, (peer, _) = central.accept()
        with connection:
            assert connection.recv(64) == f"hello from {branch.name}".encode()
        assert peer == branch.address
    with socket.create_server(("127.0.0.1", 0)) as local, pytest.raises(ConnectionRefusedError):
        branch.inside(socket.create_connection, ("127.0.0.1", local.getsockname()[1]), 5)


def test_everything_inside_dies_with_the_branch_even_when_the_test_fails() -> None:
    seen: dict[str, Any] = {}

    def failing_test() -> None:
        with Branch() as branch:
            shell = branch.run(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
            assert shell.stdout is not None
            orphan = int(shell.stdout.readline())  # left running when its shell is terminated
            seen.update(branch=branch, shell=shell, orphan=orphan)
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        failing_test()
    assert seen["shell"].poll() is not None
    assert not running(seen["orphan"])
    assert seen["branch"].name not in namespaces()
    assert seen["branch"].link not in links()


def test_namespaces_of_dead_runs_are_swept() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"rh-{dead.pid}-0"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns",
                    name], check=True)  # fmt: skip
    stray = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])
    try:
        until(lambda: str(stray.pid) in pids_in(name), f"sleep to run in {name}")
        sweep_leaked()
        assert stray.wait(5) == -9
        assert name not in namespaces()
        assert name not in links()
    finally:
        stray.kill()
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def running(pid: int) -> bool:
    """Alive and not a zombie (another process may be its parent and reap it late)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def pids_in(name: str) -> list[str]:
    listing = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return listing.stdout.split()
