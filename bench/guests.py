"""Guest power status of 200 guests on one hypervisor host: through one reused SSH connection
(the agent's guest driver, as a poll round sends it) against 200 separate `virsh domstate` runs.

The host is this machine's real libvirt (QEMU), reached as a remote host is: through an OpenSSH
`sshd` on 127.0.0.1 with key login (the tests' `tests/hypervisor_host.py`). The 200 guests are
defined, not started (a status is the same command either way). Measured in the same run:

- Rackhand: `GuestsDriver.power(status)` for the 200 guests at once, as the runner sends a
  poll round; cold (a new driver: its first command logs in) and warm (the same driver again).
- Reference: `ssh host virsh -c qemu:///system domstate UUID`, OpenSSH's client, one login per
  guest: one after the other (a script's loop) and 8 at a time (`xargs -P 8`).
- Floor: `virsh domstate UUID` run on the host itself, one after the other (no SSH at all).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

from agents.drivers.guests import GuestsDriver
from agents.protocol import GuestPath, PowerAction, PowerState
from tests.hypervisor_host import URI, LibvirtHost, libvirt_host, unavailable

GUESTS = 200
ROUNDS = 3


def _rackhand(host: LibvirtHost, uuids: Sequence[str]) -> tuple[float, float]:
    """Cold and warm seconds for the 200 statuses through one driver (one login)."""

    async def measure() -> tuple[float, float]:
        driver = GuestsDriver()
        paths = [host.guest(uuid) for uuid in uuids]
        try:
            cold = await _statuses(driver, paths)
            warm = await _statuses(driver, paths)
        finally:
            await driver.close()
        return cold, warm

    return asyncio.run(measure())


async def _statuses(driver: GuestsDriver, paths: Sequence[GuestPath]) -> float:
    start = time.perf_counter()
    states = await asyncio.gather(*(driver.power(path, PowerAction.STATUS) for path in paths))
    took = time.perf_counter() - start
    assert all(state is PowerState.OFF for state in states), states
    return took


def _ssh(host: LibvirtHost, uuid: str) -> list[str]:
    return [
        "ssh", "-i", str(host.key_file), "-p", str(host.port), "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={host.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        f"{host.username}@{host.address}", "virsh", "-c", URI, "domstate", uuid,
    ]  # fmt: skip


def _one_by_one(commands: Sequence[list[str]]) -> float:
    start = time.perf_counter()
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "shut off", done.stdout
    return time.perf_counter() - start


def _eight_at_a_time(commands: Sequence[list[str]]) -> float:
    start = time.perf_counter()
    running: list[subprocess.Popen[str]] = []
    for command in commands:
        if len(running) == 8:
            _finish(running.pop(0))
        running.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    for process in running:
        _finish(process)
    return time.perf_counter() - start


def _finish(process: subprocess.Popen[str]) -> None:
    out, _ = process.communicate()
    assert process.returncode == 0, out
    assert out.strip() == "shut off", out


def _median(measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(ROUNDS))


def run() -> None:
    why = unavailable()
    if why is not None:
        print(f"\n== guests: skipped ({why}) ==")
        return
    with libvirt_host() as host:
        print(f"\n== guests: power status of {GUESTS} guests on one libvirt host over SSH ==")
        print(f"(defining {GUESTS} guests…)", flush=True)
        uuids = [host.define(f"bench{n:03d}", serial=False) for n in range(GUESTS)]
        timings = [_rackhand(host, uuids) for _ in range(ROUNDS)]
        cold = statistics.median(cold for cold, _ in timings)
        warm = statistics.median(warm for _, warm in timings)
        logins_before = host.logins()
        serial = _median(lambda: _one_by_one([_ssh(host, uuid) for uuid in uuids]))
        parallel = _median(lambda: _eight_at_a_time([_ssh(host, uuid) for uuid in uuids]))
        logins = (host.logins() - logins_before) // ROUNDS // 2
        local = _median(lambda: _one_by_one([["virsh", "-c", URI, "domstate", u] for u in uuids]))
        rows = (
            ("rackhand, one SSH connection, cold", cold),
            ("rackhand, one SSH connection, warm", warm),
            (f"ssh + virsh domstate, one by one ({logins} logins)", serial),
            ("ssh + virsh domstate, 8 at a time", parallel),
            ("virsh domstate on the host, one by one (no SSH)", local),
        )
        print(f"median of {ROUNDS} rounds:")
        for label, seconds in rows:
            print(f"  {label:<52} {seconds:7.2f} s  {GUESTS / seconds:7.0f} guests/s")
        print(f"  ratio ssh one by one / rackhand warm: x{serial / warm:.1f}")
        print(f"  ratio ssh 8 at a time / rackhand warm: x{parallel / warm:.1f}")
        print(f"  ratio virsh on the host / rackhand warm: x{local / warm:.1f}")
