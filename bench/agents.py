"""Site agents: the same work through a remote agent on its WSS link and through the built-in one.

One central (a real `rackhand serve` on SQLite, HTTPS with a private CA's certificate for
127.0.0.1) serves two sites: site A has no agents, so the central's built-in agent reaches its
devices; site B has an enrolled `rackhand agent` (another process, on this machine), which
dials the central's link over WSS because the central's address is https. The reference is
always site A, measured in the same run.

- Power: 1,000 simulated BMCs per site (the simulators of `bench.power`, one fleet of 2,000
  whose BMCs alternate between the sites, so each site's job loads both simulator processes
  alike); a bulk `status` job (`POST /api/v1/power` for the site until the job ends) on each
  site, cold (a new central and agent: worker processes up, no IPMI session) then warm; a
  new central and agent every round, the sites' order swapped every other round.
- Consoles: a simulated machine at its login prompt behind a console server port in each site;
  keystrokes typed alternately into the two sessions' WebSockets, send to echo.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.consoles import Wiring, fleet
from bench.power import PASSWORD, simulated
from bench.server import Server, running
from tests.live import private_ca

BUILTIN, REMOTE = "site-a", "site-b"  # site A: the built-in agent; site B: its own agent
AGENT = "b-agent"
RACKHAND = str(Path(sys.executable).parent / "rackhand")
BMCS = int(os.environ.get("RACKHAND_BENCH_BMCS", "1000"))  # per site
ROUNDS = int(os.environ.get("RACKHAND_BENCH_ROUNDS", "5"))
KEYSTROKES = int(os.environ.get("RACKHAND_BENCH_KEYSTROKES", "200"))  # per site
KEY_INTERVAL = 0.05  # s between two keystrokes (alternating sites: 100 ms per site)
CENTRAL_ENV = {"RACKHAND_POLL_POWER": "false"}
WAIT = 90.0  # s for a step to finish (an agent online, a machine at its login prompt)


@dataclass
class Linked:
    """A central with both sites and site B's agent online."""

    server: Server
    agent: subprocess.Popen[bytes]
    api: httpx.Client


@dataclass
class Job:
    wall: float
    central_cpu: float  # the central and its IPMI worker processes
    agent_cpu: float  # the remote agent and its worker processes (0 for the built-in)
    failures: int


def _tree_cpu(pid: int) -> float:
    """User + system CPU seconds so far of a process and its live descendants."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


@contextmanager
def linked(folder: Path) -> Iterator[Linked]:
    """A new central and site B's new agent (enrolled, started, online), until the block ends."""
    tls = private_ca(folder)
    with (
        running("sqlite", folder / "central.log", tls=tls, env=CENTRAL_ENV) as server,
        httpx.Client(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {server.token}"},
            verify=server.verify,
            timeout=600,
        ) as api,
    ):
        for slug in (BUILTIN, REMOTE):
            site = {"slug": slug, "name": slug, "poll_seconds": 0}
            api.post("/sites", json=site).raise_for_status()
        enrolled = api.post("/agents", json={"site": REMOTE, "name": AGENT})
        enrolled.raise_for_status()
        command = [RACKHAND, "agent", "--central", server.url, "--data-dir",
                   str(folder / "agent"), "--ca-cert", str(tls[0]),
                   "--join-token", enrolled.json()["join_token"]]  # fmt: skip
        with open(folder / "agent.log", "wb") as log:
            agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:

            def online() -> bool:
                if agent.poll() is not None:
                    said = (folder / "agent.log").read_text()
                    raise RuntimeError(f"rackhand agent ended: {said}")
                agents = api.get("/agents", params={"site": REMOTE}).json()
                return bool(agents) and agents[0]["status"] == "online"

            _until(online, "site B's agent online")
            yield Linked(server, agent, api)
        finally:
            agent.terminate()
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()


# Power ------------------------------------------------------------------------------------


def _import(api: httpx.Client, site: str, ports: range) -> None:
    rows = [
        {
            "name": f"{site}-bmc{port}",
            "kind": "server",
            "site": site,
            "paths": [
                {
                    "kind": "ipmi",
                    "address": "127.0.0.1",
                    "port": port,
                    "username": "admin",
                    "secret": PASSWORD,
                }
            ],
        }
        for port in ports
    ]
    api.post("/devices/import", json=rows).raise_for_status()


def _job(setup: Linked, site: str, count: int) -> Job:
    """`POST /power` status for the site, polled every 20 ms until the job is no longer running."""
    central, agent = _tree_cpu(setup.server.pid), _tree_cpu(setup.agent.pid)
    started = time.perf_counter()
    job = setup.api.post("/power", json={"site": site, "action": "status"})
    job.raise_for_status()
    while True:
        answer = setup.api.get(f"/jobs/{job.json()['id']}", params={"tasks": "false"})
        answer.raise_for_status()
        read = answer.json()
        if read["status"] != "running":
            break
        time.sleep(0.02)
    wall = time.perf_counter() - started
    central = _tree_cpu(setup.server.pid) - central
    agent = _tree_cpu(setup.agent.pid) - agent if site == REMOTE else 0.0
    return Job(wall, central, agent, count - read["counts"].get("succeeded", 0))


def _power_round(ports: range, order: tuple[str, str]) -> dict[str, Job]:
    """A new central and agent; each site's job cold, then each again warm."""
    sites = {BUILTIN: ports[0::2], REMOTE: ports[1::2]}
    with (
        tempfile.TemporaryDirectory(prefix="rackhand-bench-agents-") as folder,
        linked(Path(folder)) as setup,
    ):
        for site, its_ports in sites.items():
            _import(setup.api, site, its_ports)
        measured = {}
        for warmth in ("cold", "warm"):
            for site in order:
                measured[f"{site} {warmth}"] = _job(setup, site, len(sites[site]))
    return measured


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def power() -> None:
    rounds: list[dict[str, Job]] = []
    with simulated(2 * BMCS, processes=2) as sims:
        for n in range(ROUNDS):
            order = (BUILTIN, REMOTE) if n % 2 == 0 else (REMOTE, BUILTIN)
            rounds.append(_power_round(sims.ports, order))
    print(f"\n== agents: status of {BMCS:,} simulated BMCs per site, {ROUNDS} rounds ==")
    print("(built-in: the central's own agent; remote: `rackhand agent` over its WSS link;")
    print(" CPU s: the central with its IPMI workers + the remote agent with its workers)")
    print(
        f"{'':<16} {'p50 s':>7} {'min s':>7} {'max s':>7} {'CPU s':>12} {'fail':>5}   "
        "remote/built-in: of p50, of min, each round"
    )
    for warmth in ("cold", "warm"):
        for site, name in ((BUILTIN, "built-in"), (REMOTE, "remote")):
            jobs = [measured[f"{site} {warmth}"] for measured in rounds]
            walls = [job.wall for job in jobs]
            cpu = statistics.median(job.central_cpu for job in jobs)
            agent = statistics.median(job.agent_cpu for job in jobs)
            cpus = f"{cpu:.2f}+{agent:.2f}" if site == REMOTE else f"{cpu:.2f}"
            row = (
                f"{name + ' ' + warmth:<16} {statistics.median(walls):>7.2f} {min(walls):>7.2f} "
                f"{max(walls):>7.2f} {cpus:>12} {sum(job.failures for job in jobs):>5}"
            )
            if site == REMOTE:
                ours = [m[f"{BUILTIN} {warmth}"].wall for m in rounds]
                each = " ".join(f"x{r / b:.2f}" for r, b in zip(walls, ours, strict=True))
                p50 = statistics.median(walls) / statistics.median(ours)
                row += f"   x{p50:.2f}, x{min(walls) / min(ours):.2f}; {each} (aim <= 1.2)"
            print(row)


# Consoles ---------------------------------------------------------------------------------


@dataclass
class Viewer:
    """The writer's WebSocket of one console session, and what it has received."""

    site: str
    socket: ClientConnection
    data: bytearray
    arrived: asyncio.Event

    async def read(self) -> None:
        async for message in self.socket:
            if isinstance(message, bytes):
                self.data += message
                self.arrived.set()

    async def seen(self, marker: bytes, start: int = 0) -> None:
        """Until `marker` has come after offset `start`."""
        while marker not in self.data[start:]:
            self.arrived.clear()
            await self.arrived.wait()


def _console_catalogue(api: httpx.Client, wiring: Wiring) -> dict[str, str]:
    """In each site, one console server (the same simulated box under two names) and one
    machine behind one of its ports; the machine's name per site."""
    box = wiring.servers[0]
    names = {}
    for site, machine in zip((BUILTIN, REMOTE), wiring.machines, strict=False):
        server = f"{site}-{box['name']}"
        api.post(
            "/devices", json={"name": server, "kind": "console_server", "site": site}
        ).raise_for_status()
        path = {
            "kind": "ssh",
            "address": box["address"],
            "port": box["port"],
            "username": box["username"],
            "secret": box["password"],
            "options": {"dialect": "opengear", "host_key": box["host_key"]},
        }
        api.post(f"/devices/{server}/paths", json=path).raise_for_status()
        name = f"{site}-{machine['name']}"
        api.post("/devices", json={"name": name, "kind": "server", "site": site}).raise_for_status()
        console = {"kind": "console_port", "via": server, "port": machine["console"]["port"]}
        api.post(f"/devices/{name}/paths", json=console).raise_for_status()
        names[site] = name
    return names


async def _open(server: Server, api: httpx.Client, site: str, device: str) -> Viewer:
    body = {"via": "console_port", "mode": "rw"}
    answer = await asyncio.to_thread(api.post, f"/devices/{device}/consoles", json=body)
    answer.raise_for_status()
    socket = await connect(
        f"{server.ws_url}{answer.json()['stream']}?mode=rw",
        additional_headers={"Authorization": f"Bearer {server.token}"},
        ssl=server.verify,
        max_size=None,
    )
    hello = json.loads(await socket.recv())
    if hello["type"] != "hello":
        raise RuntimeError(f"{site}: the console answered {hello}")
    return Viewer(site, socket, bytearray(), asyncio.Event())


async def _type(viewers: list[Viewer]) -> dict[str, list[float]]:
    """KEYSTROKES keys into each session, alternating; ms from send to its echo."""
    latencies: dict[str, list[float]] = {viewer.site: [] for viewer in viewers}
    keys = (string.ascii_lowercase * (KEYSTROKES // 26 + 1))[:KEYSTROKES]
    for key in keys:
        for viewer in viewers:
            start = len(viewer.data)
            sent = time.perf_counter()
            await viewer.socket.send(key.encode())
            async with asyncio.timeout(10):
                await viewer.seen(key.encode(), start)
            latencies[viewer.site].append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(KEY_INTERVAL)
    return latencies


async def _keystrokes(setup: Linked, wiring: Wiring, names: dict[str, str]) -> dict[str, Any]:
    viewers = [await _open(setup.server, setup.api, site, names[site]) for site in names]
    readers = [asyncio.create_task(viewer.read()) for viewer in viewers]
    try:
        for machine in wiring.machines[:2]:
            await asyncio.to_thread(wiring.control.set_power, machine["bmc_port"], "on")
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(viewer.seen(b" login: ") for viewer in viewers))
        await asyncio.sleep(1.0)  # the boot's last bytes are out
        return await _type(viewers)
    finally:
        for viewer in viewers:
            await viewer.socket.close()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


def consoles() -> None:
    with (
        fleet(2) as wiring,
        tempfile.TemporaryDirectory(prefix="rackhand-bench-agents-") as folder,
        linked(Path(folder)) as setup,
    ):
        names = _console_catalogue(setup.api, wiring)
        latencies = asyncio.run(_keystrokes(setup, wiring, names))
    print(
        f"\n== agents: keystroke to echo at a login prompt behind a console server port, "
        f"{KEYSTROKES} keys per site, one each {KEY_INTERVAL * 2000:.0f} ms, sites alternating =="
    )
    for site, name in ((BUILTIN, "built-in agent"), (REMOTE, "remote agent (WSS link)")):
        values = latencies[site]
        print(
            f"  {name:<26} p50 {_pct(values, 50):5.1f} ms  p99 {_pct(values, 99):5.1f} ms  "
            f"max {max(values):5.1f} ms"
        )
    ours, theirs = latencies[BUILTIN], latencies[REMOTE]
    print(
        f"  remote/built-in p50 x{_pct(theirs, 50) / _pct(ours, 50):.2f}, "
        f"p99 x{_pct(theirs, 99) / _pct(ours, 99):.2f} (aim: the same p99, <= 20 ms)"
    )


def run() -> None:
    power()
    consoles()
