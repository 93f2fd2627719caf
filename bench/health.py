"""Sensors of 1,000 simulated BMCs: Rackhand's agent runner against FreeIPMI's `ipmi-sensors`.

Reference, measured in the same run over the same simulators: `ipmi-sensors -F 64` (FreeIPMI's
fan-out), cold (an empty SDR cache folder: every BMC's SDR is read) and warm (the cache it
filled; FreeIPMI still opens a new session per BMC). Without `--output-sensor-state`: its
state interpretation costs FreeIPMI ten times its read (its event column still says what is
asserted). Rackhand: the agent runner alone, on
uvloop, one `HealthOrder` (sensors) per BMC; cold = a new driver (worker processes up, no
session, no SDR kept), warm = the same driver again (warm sessions, each BMC's SDR kept).
Every machine is on, so every sensor has a reading to decode.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import uvloop

from agents.drivers.registry import ipmi_workers
from agents.protocol import (
    Answer,
    HealthOrder,
    HealthRead,
    HealthReport,
    IpmiPath,
    Report,
    TaskStatus,
)
from agents.runner import Runner
from agents.workers import WorkerPool
from bench.power import (
    BMCS,
    FANOUT,
    HEADER,
    HOSTS_PER_CALL,
    PASSWORD,
    PER_SITE,
    SITE,
    Figures,
    _median,
    _peak_rss_mib,
    _row,
    _started,
    _workers_cpu,
    simulated,
)

ROUNDS = int(os.environ.get("RACKHAND_BENCH_ROUNDS", "3"))
SENSORS = 13  # readable sensors of each simulated BMC (sim/sensors.py)
TIMEOUT = 60.0


def _ipmi_sensors(ports: Sequence[int], cache: Path) -> Figures:
    """`ipmi-sensors` over the BMCs, `FANOUT` at once, in calls of at most HOSTS_PER_CALL."""
    wall = cpu = rss = 0.0
    lines: Counter[str] = Counter()
    for start in range(0, len(ports), HOSTS_PER_CALL):
        hosts = ",".join(f"127.0.0.1:{port}" for port in ports[start : start + HOSTS_PER_CALL])
        command = [
            "ipmi-sensors", "-D", "LAN_2_0", "-h", hosts, "-u", "admin", "-p", PASSWORD,
            "-F", str(FANOUT), "--session-timeout=3000", "--retransmission-timeout=500",
            f"--sdr-cache-directory={cache}", "--quiet-cache", "--comma-separated-output",
            "--no-header-output",
        ]  # fmt: skip
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        output = process.stdout.read().decode(errors="replace")
        process.stdout.close()
        _, _, usage = os.wait4(process.pid, 0)
        process.returncode = 0
        wall += time.perf_counter() - started
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, usage.ru_maxrss / 1024)
        for line in output.splitlines():
            host, _, rest = line.partition(": ")
            if rest[:1].isdigit():  # "1,Inlet Temp,Temperature,Nominal,…": a sensor line
                lines[host] += 1
    failures = sum(1 for port in ports if lines[f"127.0.0.1:{port}"] < SENSORS)
    return Figures(wall, cpu, rss, failures)


async def _runner_pass(driver: WorkerPool, ports: Sequence[int]) -> Figures:
    """One sensors order per BMC; time until every answer is in."""
    submitted: dict[str, float] = {}
    latencies: list[float] = []
    why: Counter[str] = Counter()
    done = asyncio.Event()

    async def report(report: Report) -> None:
        return None

    async def answered(answer: Answer) -> None:
        assert isinstance(answer, HealthReport)
        latencies.append(time.perf_counter() - submitted[answer.task_id])
        sensors = answer.data.sensors if answer.data is not None else ()
        if answer.status is not TaskStatus.SUCCEEDED or len(sensors) < SENSORS:
            why[f"{answer.status}: {answer.message}"[:200]] += 1
        if len(latencies) == len(ports):
            done.set()

    runner = Runner({"ipmi": driver}, report, answered, per_site=PER_SITE)
    cpu, started = time.process_time() + _workers_cpu(driver, ports), time.perf_counter()
    for port in ports:
        path = IpmiPath("127.0.0.1", "admin", PASSWORD, port=port)
        task_id = f"sensors-{port}-{time.monotonic_ns()}"
        submitted[task_id] = time.perf_counter()
        runner.submit(
            HealthOrder(task_id, f"bmc{port}", SITE, HealthRead.SENSORS, (path,), TIMEOUT)
        )
    await done.wait()
    wall = time.perf_counter() - started
    cpu = time.process_time() + _workers_cpu(driver, ports) - cpu
    await runner.close()
    return Figures(wall, cpu, _peak_rss_mib(), why.total(), latencies, why)


async def _rackhand(ports: Sequence[int]) -> tuple[Figures, Figures]:
    driver = await _started(ipmi_workers())
    try:
        cold = await _runner_pass(driver, ports)
        warm = await _runner_pass(driver, ports)
    finally:
        await driver.close()
    return cold, warm


def _sensors(count: int) -> None:
    processes = min(os.cpu_count() or 1, 4)
    print(f"\nSensors of {count} simulated BMCs ({processes} simulator processes, all on), "
          f"median of {ROUNDS} rounds; fan-out {FANOUT}")  # fmt: skip
    rounds: dict[str, list[Figures]] = {}
    with simulated(count, processes) as fleet:
        fleet.all_on()
        for number in range(1, ROUNDS + 1):
            cache = Path(tempfile.mkdtemp(prefix="rackhand-sdr-"))
            try:
                theirs_cold = _ipmi_sensors(fleet.ports, cache)
                theirs_warm = _ipmi_sensors(fleet.ports, cache)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            ours_cold, ours_warm = uvloop.run(_rackhand(fleet.ports))
            measured = {
                "ipmi-sensors cold": theirs_cold,
                "Rackhand cold": ours_cold,
                "ipmi-sensors warm": theirs_warm,
                "Rackhand warm": ours_warm,
            }
            for name, figures in measured.items():
                rounds.setdefault(name, []).append(figures)
            print(f"  round {number}: cold x{ours_cold.wall / theirs_cold.wall:.2f}, "
                  f"warm x{ours_warm.wall / theirs_warm.wall:.2f}")  # fmt: skip
    print(HEADER)
    medians = {name: _median(figures) for name, figures in rounds.items()}
    for name, figures in medians.items():
        reference = None
        if name.startswith("Rackhand"):
            reference = medians[name.replace("Rackhand", "ipmi-sensors")]
        print(_row(name, figures, reference))


def run() -> None:
    if shutil.which("ipmi-sensors") is None:
        print("health: FreeIPMI's ipmi-sensors is missing (make peers); skipped")
        return
    _sensors(BMCS)
