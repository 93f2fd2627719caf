"""Fleet power over simulated BMCs: status of 1,000 (and 10,000) BMCs, and a cycle of 1,000;
then a cold cycle of 1,000 OpenIPMI `ipmi_sim` BMCs, which log whether each ran exactly once.

Reference measured in the same run, over the same simulators: FreeIPMI's `ipmipower` (fresh
RMCP+ sessions, fanout 64). Rackhand is measured as the agent runner alone (in this process, on
uvloop as in `rackhand serve`; cold = a new driver whose worker processes are up but hold no
session, as after an agent's start; warm = the same driver again) and as an API job
(`POST /power` to the job's end, on a real `rackhand serve` with SQLite).
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop

from agents.drivers.registry import ipmi_workers
from agents.protocol import IpmiPath, PowerAction, PowerOrder, Report, TaskStatus
from agents.runner import Runner
from agents.workers import WorkerPool
from bench.server import Server, running
from sim.control import FleetControl
from sim.openipmi import Bmc, openipmi_fleet

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-bmc-password"
SITE = "bench"
POST = 1.5  # s the simulated firmware shows its POST screen; booting on takes half that again
TIMING = ("--on-delay", "0.2", "--cycle-off", "0.3", "--post-seconds", str(POST))
# s after a cycle until every machine is off, on, through POST and booted: its firmware prints
# nothing more, so the next pass finds the simulators idle.
SETTLE = 0.3 + 0.2 + POST * 1.5 + 0.5
FANOUT = 64
PER_SITE = 256
TASK_TIMEOUT = 30.0
HOSTS_PER_CALL = 5000  # one argument holds at most 128 KiB: 5,000 "127.0.0.1:PORT" fit
BMCS = int(os.environ.get("RACKHAND_BENCH_BMCS", "1000"))
SKIP_10K = os.environ.get("RACKHAND_BENCH_SKIP_10K") == "1"
ROUNDS = int(os.environ.get("RACKHAND_BENCH_ROUNDS", "5"))
OPENIPMI_BMCS = int(os.environ.get("RACKHAND_BENCH_OPENIPMI", "1000"))  # 0: skip; 3.5 GiB RSS
OPENIPMI_ROUNDS = min(ROUNDS, 3)


@dataclass
class Fleet:
    process: subprocess.Popen[bytes]
    ports: range
    control: FleetControl

    def all_on(self) -> None:
        """Every machine on, through the control channel (no IPMI)."""
        for port in self.ports:
            self.control.set_power(port, "on")


@dataclass
class Figures:
    """One measured pass: wall and CPU seconds, peak RSS (MiB), failures, per-BMC latencies."""

    wall: float
    cpu: float
    rss_mib: float
    failures: int
    latencies: list[float] = field(default_factory=list)
    why: Counter[str] = field(default_factory=Counter)  # failure status and message

    def per_bmc(self) -> str:
        if not self.latencies:
            return "-"
        median = statistics.median(self.latencies)
        p99 = statistics.quantiles(self.latencies, n=100, method="inclusive")[98]
        return f"{median:.2f} / {p99:.2f} s (x{p99 / median:.1f})"


def _free_udp_base(count: int) -> int:
    """The first of `count` consecutive UDP ports on 127.0.0.1 that are free right now."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - count)
        try:
            for port in range(base, base + count):  # one at a time: 10,000 would pass ulimit -n
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free UDP ports")


def _lines_until(process: subprocess.Popen[bytes], prefix: bytes, timeout: float) -> list[bytes]:
    """Lines of stdout up to the one starting with `prefix` (RuntimeError if it never comes)."""
    assert process.stdout is not None
    deadline, buffer = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        lines = buffer.split(b"\n")[:-1]
        if any(line.startswith(prefix) for line in lines):
            return lines
        if select.select([process.stdout], [], [], deadline - time.monotonic())[0]:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
    raise RuntimeError(f"the simulated fleet did not start: {buffer.decode()}")


@contextmanager
def simulated(count: int, processes: int) -> Iterator[Fleet]:
    """`python -m sim` with `count` BMCs, all off, until the block ends."""
    base = _free_udp_base(count)
    command = [sys.executable, "-m", "sim", "--count", str(count), "--base-port", str(base)]
    options = ["--processes", str(processes), "--password", PASSWORD, "--control-port", "0"]
    process = subprocess.Popen(
        [*command, *options, *TIMING],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        lines = _lines_until(process, b"listening: ", timeout=60)
        control_port = int(lines[0].rsplit(b":", 1)[1])
        control = FleetControl("127.0.0.1", control_port, timeout=30)
        try:
            yield Fleet(process, range(base, base + count), control)
        finally:
            control.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def _ipmipower(ports: Sequence[int], action: str, *options: str) -> Figures:
    """`ipmipower --stat|--cycle` over the BMCs, in calls of at most HOSTS_PER_CALL hosts."""
    wall = cpu = rss = 0.0
    answered = failures = 0
    for start in range(0, len(ports), HOSTS_PER_CALL):
        hosts = ",".join(f"127.0.0.1:{port}" for port in ports[start : start + HOSTS_PER_CALL])
        started = time.perf_counter()
        target = ["-D", "LAN_2_0", "-h", hosts, "-u", "admin", "-p", PASSWORD]
        timing = ["-F", str(FANOUT), "--session-timeout=3000", "--retransmission-timeout=500"]
        process = subprocess.Popen(
            ["ipmipower", *target, *timing, *options, action],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        output = process.stdout.read()  # to EOF; the child stays unreaped for wait4's rusage
        process.stdout.close()
        _, _, usage = os.wait4(process.pid, 0)
        process.returncode = 0
        wall += time.perf_counter() - started
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, usage.ru_maxrss / 1024)
        lines = output.splitlines()
        answered += len(lines)
        failures += sum(line.rsplit(": ", 1)[-1] not in ("on", "off", "ok") for line in lines)
    return Figures(wall, cpu, rss, failures + max(0, len(ports) - answered))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (children of ours that are still alive)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _workers_cpu(driver: WorkerPool, ports: Sequence[int]) -> float:
    paths = (IpmiPath("127.0.0.1", "admin", PASSWORD, port=port) for port in ports)
    pids = {driver.pid(path) for path in paths} - {None}
    return sum(_process_cpu(pid) for pid in pids if pid is not None)


async def _runner_pass(driver: WorkerPool, ports: Sequence[int], action: PowerAction) -> Figures:
    """Submit one order per BMC to a runner; time until every final report is in."""
    submitted: dict[str, float] = {}
    latencies: list[float] = []
    why: Counter[str] = Counter()
    done = asyncio.Event()

    async def sink(report: Report) -> None:
        if report.status is TaskStatus.RUNNING:
            return
        latencies.append(time.perf_counter() - submitted[report.task_id])
        if report.status is not TaskStatus.SUCCEEDED:
            why[f"{report.status}: {report.message}"] += 1
        if len(latencies) == len(ports):
            done.set()

    runner = Runner({"ipmi": driver}, sink, per_site=PER_SITE)
    cpu, started = time.process_time() + _workers_cpu(driver, ports), time.perf_counter()
    for port in ports:
        path = IpmiPath("127.0.0.1", "admin", PASSWORD, port=port)
        order = PowerOrder(f"{action}-{port}", f"bmc{port}", SITE, action, (path,), TASK_TIMEOUT)
        submitted[order.task_id] = time.perf_counter()
        runner.submit(order)
    await done.wait()
    wall = time.perf_counter() - started
    cpu = time.process_time() + _workers_cpu(driver, ports) - cpu
    await runner.close()
    return Figures(wall, cpu, _peak_rss_mib(), why.total(), latencies, why)


async def _started(driver: WorkerPool) -> WorkerPool:
    """Worker processes up, as a running agent has them (it starts them when it starts):
    "cold" means no IPMI session yet, not no process yet."""
    started = time.perf_counter()
    await driver.start()
    print(f"  IPMI worker processes up in {time.perf_counter() - started:.2f} s (not timed below)")
    return driver


async def _runner_cycle_cold(ports: Sequence[int]) -> Figures:
    """A cycle of every BMC by a new driver: worker processes up, no session yet."""
    driver = await _started(ipmi_workers())
    try:
        return await _runner_pass(driver, ports, PowerAction.CYCLE)
    finally:
        await driver.close()


async def _runner_suite(fleet: Fleet, cycle: bool) -> dict[str, Figures]:
    """Status cold then warm; with `cycle`, a cycle of all on the warm driver and on a new one."""
    results: dict[str, Figures] = {}
    driver = await _started(ipmi_workers())
    try:
        results["status cold"] = await _runner_pass(driver, fleet.ports, PowerAction.STATUS)
        results["status warm"] = await _runner_pass(driver, fleet.ports, PowerAction.STATUS)
        if cycle:
            await asyncio.to_thread(fleet.all_on)
            results["cycle warm"] = await _runner_pass(driver, fleet.ports, PowerAction.CYCLE)
    finally:
        await driver.close()
    if cycle:
        await asyncio.sleep(SETTLE)
        await asyncio.to_thread(fleet.all_on)
        results["cycle cold"] = await _runner_cycle_cold(fleet.ports)
    return results


def _server_cpu(server: Server) -> float:
    """User + system CPU seconds of the server process so far."""
    fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _api_job(client: httpx.Client, server: Server, count: int) -> Figures:
    """`POST /power` status for the site, polled until the job is no longer running."""
    cpu, started = _server_cpu(server), time.perf_counter()
    job = client.post("/power", json={"site": SITE, "action": "status"})
    job.raise_for_status()
    job_id = job.json()["id"]
    while True:
        answer = client.get(f"/jobs/{job_id}", params={"tasks": "false"})
        answer.raise_for_status()
        read = answer.json()
        if read["status"] != "running":
            break
        time.sleep(0.02)
    wall, cpu = time.perf_counter() - started, _server_cpu(server) - cpu
    succeeded = read["counts"].get("succeeded", 0)
    return Figures(wall, cpu, server.peak_rss_mib(), count - succeeded)


def _api_suite(fleet: Fleet) -> dict[str, Figures]:
    """A site with one device per BMC, then the status job twice (cold, then warm sessions)."""
    rows = [
        {
            "name": f"bmc{port}",
            "kind": "server",
            "site": SITE,
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
        for port in fleet.ports
    ]
    with running("sqlite") as server:
        auth = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=f"{server.url}/api/v1", headers=auth, timeout=600) as client:
            site = {"slug": SITE, "name": "Bench", "poll_seconds": 0}
            client.post("/sites", json=site).raise_for_status()
            client.post("/devices/import", json=rows).raise_for_status()
            cold = _api_job(client, server, len(rows))
            warm = _api_job(client, server, len(rows))
    return {"API job cold": cold, "API job warm": warm}


def _row(name: str, figures: Figures, reference: Figures | None) -> str:
    ratio = f"x{figures.wall / reference.wall:.2f}" if reference else "-"
    row = (
        f"{name:<26} {figures.wall:>7.2f} {figures.cpu:>7.2f} {ratio:>7} {figures.rss_mib:>8.0f} "
        f"{figures.failures:>5}   {figures.per_bmc()}"
    )
    for why, count in figures.why.most_common(2):
        row += f"\n{'':<29}{count} x {why[:100]}"
    return row


HEADER = f"{'':<26} {'wall s':>7} {'CPU s':>7} {'ratio':>7} {'RSS MiB':>8} {'fail':>5}   "
HEADER += "per BMC median / p99"


def _median(rounds: list[Figures]) -> Figures:
    """The round of median wall time (its CPU, RSS and latencies), with all rounds' failures."""
    middle = sorted(rounds, key=lambda figures: figures.wall)[len(rounds) // 2]
    why = sum((figures.why for figures in rounds), Counter())
    failures = sum(figures.failures for figures in rounds)
    return Figures(middle.wall, middle.cpu, middle.rss_mib, failures, middle.latencies, why)


def _status_and_cycle(count: int) -> None:
    """ROUNDS rounds, each ipmipower then Rackhand on idle simulators; medians are shown.

    The machine's speed drifts by a third from one minute to the next, so one pass each
    would compare two different machines; the ratio of the medians, and each round's own
    ratio, compare like with like.
    """
    rounds: list[dict[str, Figures]] = []
    with simulated(count, processes=2 if count <= 2000 else 4) as fleet:
        for _ in range(ROUNDS):
            measured = {"ipmipower --stat": _ipmipower(fleet.ports, "--stat")}
            fleet.all_on()
            measured["ipmipower --cycle"] = _ipmipower(fleet.ports, "--cycle")
            time.sleep(SETTLE)
            ours = uvloop.run(_runner_suite(fleet, cycle=True))
            measured |= {f"runner {name}": figures for name, figures in ours.items()}
            time.sleep(SETTLE)
            rounds.append(measured)
        api = _api_suite(fleet)
    median = {name: _median([measured[name] for measured in rounds]) for name in rounds[0]}
    print(f"\n== power: status and cycle of {count:,} simulated BMCs, median of {ROUNDS} rounds ==")
    print("(ratio = wall / ipmipower's; RSS: ipmipower's, the bench process's, the server's)")
    print(HEADER)
    for action, passes in (
        ("stat", ("status cold", "status warm")),
        ("cycle", ("cycle cold", "cycle warm")),
    ):
        reference = f"ipmipower --{action}"
        print(_row(reference, median[reference], None))
        for name in (f"runner {name}" for name in passes):
            print(_row(name, median[name], median[reference]))
            each = " ".join(f"x{m[name].wall / m[reference].wall:.2f}" for m in rounds)
            print(f"{'':<29}each round: {each}")
        if action == "stat":
            for name, figures in api.items():
                print(_row(name, figures, median[reference]))


def _status_10k() -> None:
    count = 10_000
    with simulated(count, processes=4) as fleet:
        reference = _ipmipower(fleet.ports, "--stat")
        ours = uvloop.run(_runner_suite(fleet, cycle=False))
    print(f"\n== power: status of {count:,} simulated BMCs (aim <= 5 s) ==")
    print(HEADER)
    calls = -(-count // HOSTS_PER_CALL)
    print(_row(f"ipmipower --stat ({calls} calls)", reference, None))
    for name, figures in ours.items():
        print(_row(f"runner {name}", figures, reference))


def _cycles(bmc: Bmc) -> int:
    """How many power cycles an ipmi_sim ran: it logs `power 0` for each (and `power 1` 1 s on)."""
    return bmc.changes().count("power 0")


def _settled(bmcs: list[Bmc]) -> None:
    """Wait until every cycled ipmi_sim is on again, and a little more for a late duplicate."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(bmc.power() == "off" for bmc in bmcs):
        time.sleep(0.2)
    time.sleep(1.5)


def _exactly_once(bmcs: list[Bmc], figures: Figures) -> Figures:
    """`figures` with every BMC not cycled exactly once counted as a failure, and why."""
    counts = Counter(_cycles(bmc) for bmc in bmcs)
    for times, bmcs_with in counts.items():
        if times != 1:
            figures.why[f"cycled {times} times (ipmi_sim's own log)"] += bmcs_with
    figures.failures = max(figures.failures, len(bmcs) - counts[1])
    return figures


def _openipmi_cycle(count: int) -> None:
    """A cold cycle of `count` OpenIPMI ipmi_sim BMCs: someone else's BMC, which logs each
    change it makes, so a command that ran twice shows. One process per BMC, each forking its
    chassis_control program per change: the fleet itself, not the client, sets most of the time.
    ipmipower needs its `opensesspriv` workaround for ipmi_sim (without it: "privilege level
    cannot be obtained for this user" from every BMC).
    """
    rounds: list[dict[str, Figures]] = []
    with openipmi_fleet(count, password=PASSWORD) as bmcs:
        ports = [bmc.port for bmc in bmcs]
        for _ in range(OPENIPMI_ROUNDS):
            measured = {}
            for name in ("ipmipower --cycle", "runner cycle cold"):
                for bmc in bmcs:
                    bmc.reset()
                    bmc.set_power(True)
                if name.startswith("ipmipower"):
                    figures = _ipmipower(ports, "--cycle", "-W", "opensesspriv")
                else:
                    figures = uvloop.run(_runner_cycle_cold(ports))
                _settled(bmcs)
                measured[name] = _exactly_once(bmcs, figures)
            rounds.append(measured)
        for bmc in bmcs:
            bmc.reset()
    median = {name: _median([measured[name] for measured in rounds]) for name in rounds[0]}
    print(
        f"\n== power: cold cycle of {count:,} OpenIPMI ipmi_sim BMCs, median of "
        f"{OPENIPMI_ROUNDS} rounds =="
    )
    print("(fail: all rounds, including BMCs that ipmi_sim logged cycling twice)")
    print(HEADER)
    reference = median["ipmipower --cycle"]
    print(_row("ipmipower --cycle", reference, None))
    print(_row("runner cycle cold", median["runner cycle cold"], reference))
    each = " ".join(
        f"x{m['runner cycle cold'].wall / m['ipmipower --cycle'].wall:.2f}" for m in rounds
    )
    print(f"{'':<29}each round: {each}")


def run() -> None:
    _status_and_cycle(BMCS)
    if not SKIP_10K:
        _status_10k()
    if OPENIPMI_BMCS:
        _openipmi_cycle(OPENIPMI_BMCS)
