"""Consoles: 50 console-server sessions on one central, 4 viewers each (1 writer, 3 read-only).

A simulated fleet (`python -m sim` with opengear console servers) and a real `rackhand serve`
(SQLite, built-in agent). Every machine starts off, so each viewer's stream holds the whole
output of its session and the four streams of a session must be identical, byte for byte.

- Throughput: the writer presses F2 during POST, then pastes right-arrow keys into the BIOS
  setup screen; each one redraws the whole screen (~2.2 KB in one burst). The writer keeps at
  most WINDOW redraws in flight (counted at its slowest viewer, so no viewer is dropped).
- Keystrokes: F10 leaves setup and the machine boots to its login prompt, which echoes typed
  characters; every writer types KEYSTROKES characters, one each KEY_INTERVAL, all sessions at
  once. Latency = send to the echo arriving, at the writer and at each read-only viewer.
- Reference, in the same run: OpenSSH `ssh` straight to a console server port (one machine no
  session holds), the same keystrokes; and Rackhand with a single session typing.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.power import _free_udp_base, _lines_until, _process_cpu
from bench.server import Server, running
from sim.control import FleetControl

ROOT = Path(__file__).resolve().parents[1]
SITE = "bench"
SESSIONS = int(os.environ.get("RACKHAND_BENCH_CONSOLES", "50"))
VIEWERS = 4  # per session: the writer and 3 read-only
KEYSTROKES = int(os.environ.get("RACKHAND_BENCH_KEYSTROKES", "100"))
KEY_INTERVAL = 0.1  # s between two keystrokes of one writer (a fast typist)
REDRAWS = int(os.environ.get("RACKHAND_BENCH_REDRAWS", "400"))  # setup screens per session
WINDOW = 32  # redraws in flight per session
BATCH = 8  # arrow keys per WebSocket frame
PORTS_PER_SERVER = 16
CLEAR = b"\x1b[2J\x1b[H"  # starts every redraw of the setup screen
F2, F10, RIGHT = b"\x1b[12~", b"\x1b[21~", b"\x1b[C"
WAIT = 60.0  # s for any step of a phase to finish


@dataclass
class Wiring:
    pid: int  # the simulator's
    control: FleetControl
    servers: list[dict[str, Any]]
    machines: list[dict[str, Any]]


@contextmanager
def fleet(count: int) -> Iterator[Wiring]:
    """`count` machines (off) behind opengear console servers, until the block ends."""
    base = _free_udp_base(count)
    servers = -(-count // PORTS_PER_SERVER)
    command = [sys.executable, "-m", "sim", "--count", str(count), "--base-port", str(base)]
    options = ["--control-port", "0", "--wiring", "--console-servers", str(servers)]
    options += ["--console-ports", str(PORTS_PER_SERVER), "--console-dialect", "opengear"]
    process = subprocess.Popen(
        [*command, *options], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        lines = _lines_until(process, b"listening: ", timeout=60)
        control_port = int(lines[0].rsplit(b":", 1)[1])
        wiring = json.loads(next(line for line in lines if line.startswith(b"wiring: "))[8:])
        control = FleetControl("127.0.0.1", control_port, timeout=30)
        try:
            yield Wiring(process.pid, control, wiring["devices"], wiring["machines"])
        finally:
            control.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def catalogue(client: httpx.Client, wiring: Wiring, machines: list[dict[str, Any]]) -> None:
    """The site, the console servers with their SSH path, and a server per machine."""
    site = {"slug": SITE, "name": "Bench", "poll_seconds": 0}
    client.post("/sites", json=site).raise_for_status()
    for box in wiring.servers:
        body = {"name": box["name"], "kind": "console_server", "site": SITE}
        client.post("/devices", json=body).raise_for_status()
        path = {
            "kind": "ssh",
            "address": box["address"],
            "port": box["port"],
            "username": box["username"],
            "secret": box["password"],
            "options": {"dialect": "opengear", "host_key": box["host_key"]},
        }
        client.post(f"/devices/{box['name']}/paths", json=path).raise_for_status()
    for machine in machines:
        body = {"name": machine["name"], "kind": "server", "site": SITE}
        client.post("/devices", json=body).raise_for_status()
        console = machine["console"]
        path = {"kind": "console_port", "via": console["server"], "port": console["port"]}
        client.post(f"/devices/{machine['name']}/paths", json=path).raise_for_status()


@dataclass(eq=False)
class Viewer:
    """One WebSocket: every byte received, when each frame came, and the events."""

    mode: str
    session: Session
    socket: ClientConnection | None = None
    data: bytearray = field(default_factory=bytearray)
    ends: list[int] = field(default_factory=list)  # len(data) after each frame
    times: list[float] = field(default_factory=list)  # perf_counter when each frame came
    clears: int = 0
    errors: list[str] = field(default_factory=list)
    hello: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        assert self.socket is not None
        async for message in self.socket:
            now = time.perf_counter()
            if isinstance(message, str):
                event = json.loads(message)
                if event["type"] == "hello":
                    self.hello.set()
                elif event["type"] == "error":
                    self.errors.append(f"{event['error']}: {event['detail']}")
                continue
            scan = max(0, len(self.data) - len(CLEAR) + 1)
            self.data += message
            self.clears += self.data.count(CLEAR, scan)
            self.ends.append(len(self.data))
            self.times.append(now)
            self.session.progress.set()

    def arrival(self, offset: int) -> float:
        """When the byte at `offset` arrived."""
        return self.times[bisect.bisect_right(self.ends, offset)]


@dataclass(eq=False)
class Session:
    device: str
    id: str = ""
    stream: str = ""
    viewers: list[Viewer] = field(default_factory=list)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def writer(self) -> Viewer:
        return self.viewers[0]

    async def send(self, data: bytes) -> None:
        assert self.writer.socket is not None
        await self.writer.socket.send(data)

    async def until(self, check: Callable[[], bool]) -> None:
        """Wait until `check()` holds, re-checked whenever output arrives."""
        while not check():
            self.progress.clear()
            await self.progress.wait()

    async def seen(self, marker: bytes, start: int = 0) -> None:
        """Until every viewer has received `marker` after offset `start` (WAIT s at most)."""
        try:
            async with asyncio.timeout(WAIT):
                await self.until(lambda: all(marker in v.data[start:] for v in self.viewers))
        except TimeoutError:
            tail = bytes(self.writer.data[-200:])
            raise RuntimeError(f"{self.device}: no {marker!r} in {WAIT} s; {tail!r}") from None


async def attach(server: Server, session: Session, readers: list[asyncio.Task[None]]) -> None:
    """The writer first (it gets the write lock), then the read-only viewers."""
    url = server.url.replace("http://", "ws://") + session.stream
    headers = {"Authorization": f"Bearer {server.token}"}
    for n in range(VIEWERS):
        viewer = Viewer("rw" if n == 0 else "ro", session)
        viewer.socket = await connect(
            f"{url}?mode={viewer.mode}", additional_headers=headers, max_size=None
        )
        session.viewers.append(viewer)
        readers.append(asyncio.create_task(viewer.read()))
        await asyncio.wait_for(viewer.hello.wait(), WAIT)  # joined: from now on it gets output


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in ms."""
    ordered = sorted(values)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


@dataclass
class Keystrokes:
    writer: list[float] = field(default_factory=list)
    readers: list[float] = field(default_factory=list)  # at the read-only viewers
    wrong: int = 0  # echoed bytes that differ from what was typed (or never came)
    wall: float = 0.0
    cpu: float = 0.0  # the server's

    def row(self, name: str) -> str:
        both = self.writer + self.readers
        if not both:
            return f"{name:<34} no echo"
        p50, p99, top = quantiles(both)
        w50, w99, _ = quantiles(self.writer)
        ro = f"{quantiles(self.readers)[1]:7.1f}" if self.readers else f"{'-':>7}"
        return (
            f"{name:<34} {p50:7.1f} {p99:7.1f} {top:7.1f} {w50:7.1f} {w99:7.1f} {ro} "
            f"{self.wrong:>6} {self.cpu:>6.2f}"
        )


async def type_keys(sessions: list[Session], server: Server) -> Keystrokes:
    """Every session's writer types KEYSTROKES characters at the login prompt, paced."""
    result = Keystrokes()
    starts = {id(v): len(v.data) for s in sessions for v in s.viewers}
    typed: dict[int, tuple[bytes, list[float]]] = {}

    async def typist(session: Session) -> None:
        text = "".join(random.choices(string.ascii_lowercase, k=KEYSTROKES)).encode()
        sent: list[float] = []
        typed[id(session)] = (text, sent)
        await asyncio.sleep(random.uniform(0, KEY_INTERVAL))
        began = time.perf_counter()
        for n in range(KEYSTROKES):
            await asyncio.sleep(max(0.0, began + n * KEY_INTERVAL - time.perf_counter()))
            sent.append(time.perf_counter())
            await session.send(text[n : n + 1])
        with suppress(TimeoutError):  # what never came counts as wrong
            async with asyncio.timeout(10):
                await session.until(
                    lambda: all(len(v.data) >= starts[id(v)] + KEYSTROKES for v in session.viewers)
                )

    cpu, started = _process_cpu(server.pid), time.perf_counter()
    await asyncio.gather(*(typist(s) for s in sessions))
    result.wall, result.cpu = time.perf_counter() - started, _process_cpu(server.pid) - cpu
    for session in sessions:
        text, sent = typed[id(session)]
        for viewer in session.viewers:
            start = starts[id(viewer)]
            echoed = bytes(viewer.data[start : start + KEYSTROKES])
            result.wrong += sum(a != b for a, b in zip(echoed, text, strict=False))
            result.wrong += KEYSTROKES - len(echoed)
            into = result.writer if viewer is session.writer else result.readers
            into.extend(viewer.arrival(start + n) - sent[n] for n in range(len(echoed)))
    return result


@dataclass
class Throughput:
    bytes: int = 0  # per session stream (each viewer received all of it)
    wall: float = 0.0
    per_session: list[float] = field(default_factory=list)  # MB/s
    cpu: float = 0.0  # the server's
    sim_cpu: float = 0.0
    client_cpu: float = 0.0  # this process's (the viewers')


async def redraw(sessions: list[Session], server: Server, sim: int) -> Throughput:
    """REDRAWS setup screens per session, at most WINDOW in flight; every viewer gets each one."""
    result = Throughput()

    async def paste(session: Session) -> None:
        base = [v.clears for v in session.viewers]
        offset = len(session.writer.data)
        began = time.perf_counter()
        sent = 0
        while sent < REDRAWS:
            done = min(v.clears - b for v, b in zip(session.viewers, base, strict=True))
            if sent - done + BATCH <= WINDOW:
                keys = min(BATCH, REDRAWS - sent)
                await session.send(RIGHT * keys)
                sent += keys
                continue
            session.progress.clear()
            await asyncio.wait_for(session.progress.wait(), WAIT)
        async with asyncio.timeout(WAIT):
            await session.until(
                lambda: all(
                    v.clears - b >= REDRAWS for v, b in zip(session.viewers, base, strict=True)
                )
            )
        elapsed = time.perf_counter() - began
        size = len(session.writer.data) - offset
        result.bytes += size
        result.per_session.append(size / elapsed / 1e6)

    cpu, sim_cpu, client_cpu = _process_cpu(server.pid), _process_cpu(sim), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(paste(s) for s in sessions))
    result.wall, result.cpu = time.perf_counter() - started, _process_cpu(server.pid) - cpu
    result.sim_cpu = _process_cpu(sim) - sim_cpu
    result.client_cpu = time.process_time() - client_cpu
    return result


async def ssh_reference(box: dict[str, Any], port: int) -> Keystrokes:
    """OpenSSH's `ssh` to one console server port (host key pinned, password by askpass)."""
    result = Keystrokes()
    with tempfile.TemporaryDirectory(prefix="rackhand-bench-ssh-") as folder:
        known_hosts = Path(folder) / "known_hosts"
        known_hosts.write_text(f"[{box['address']}]:{box['port']} {box['public_key']}\n")
        askpass = Path(folder) / "askpass.sh"
        askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{box['password']}'\n")
        askpass.chmod(0o700)
        command = [
            "ssh", "-F", "/dev/null", "-tt", "-p", str(box["port"]),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "PreferredAuthentications=password",
            "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1",
            f"{box['username']}:port{port:02d}@{box['address']}",
        ]  # fmt: skip
        env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
        env.pop("DISPLAY", None)
        ssh = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # no controlling terminal: askpass, never a tty prompt
        )
        assert ssh.stdin is not None
        assert ssh.stdout is not None
        try:
            ssh.stdin.write(b"\r")  # a fresh login prompt shows the port is attached
            async with asyncio.timeout(WAIT):
                seen = b""
                while b"login: " not in seen:
                    seen += await ssh.stdout.read(4096)
            text = "".join(random.choices(string.ascii_lowercase, k=KEYSTROKES)).encode()
            for n in range(KEYSTROKES):
                sent = time.perf_counter()
                ssh.stdin.write(text[n : n + 1])
                await ssh.stdin.drain()
                echo = await asyncio.wait_for(ssh.stdout.read(1), 10)
                result.writer.append(time.perf_counter() - sent)
                result.wrong += echo != text[n : n + 1]
                await asyncio.sleep(max(0.0, sent + KEY_INTERVAL - time.perf_counter()))
        finally:
            ssh.kill()
            await ssh.wait()
    return result


@dataclass
class Figures:
    sessions: int = 0
    throughput: Throughput = field(default_factory=Throughput)
    throughput_alone: Throughput = field(default_factory=Throughput)
    loaded: Keystrokes = field(default_factory=Keystrokes)
    alone: Keystrokes = field(default_factory=Keystrokes)
    ssh: Keystrokes = field(default_factory=Keystrokes)
    lost: dict[str, int] = field(default_factory=dict)  # viewer -> bytes missing or different
    errors: list[str] = field(default_factory=list)
    cpu: float = 0.0  # the server's, from the first session opened to the end
    rss_mib: float = 0.0
    client_cpu: float = 0.0  # this process's over the same span


def lost_bytes(sessions: list[Session]) -> dict[str, int]:
    """Per read-only viewer whose stream is not the writer's: the bytes missing or different."""
    lost = {}
    for session in sessions:
        reference = bytes(session.writer.data)
        for n, viewer in enumerate(session.viewers[1:], 1):
            got = bytes(viewer.data)
            if got != reference:
                same = next(
                    (i for i, (a, b) in enumerate(zip(got, reference, strict=False)) if a != b),
                    min(len(got), len(reference)),
                )
                lost[f"{session.device}/{n}"] = max(len(reference), len(got)) - same
    return lost


async def scenario(server: Server, wiring: Wiring, figures: Figures) -> None:
    machines = wiring.machines[:SESSIONS]
    auth = {"Authorization": f"Bearer {server.token}"}
    sessions = [Session(m["name"]) for m in machines]
    readers: list[asyncio.Task[None]] = []
    cpu, client_cpu = _process_cpu(server.pid), time.process_time()
    async with httpx.AsyncClient(
        base_url=f"{server.url}/api/v1", headers=auth, timeout=120
    ) as client:
        limit = asyncio.Semaphore(10)

        async def open_one(session: Session) -> None:
            async with limit:
                body = {"via": "console_port", "mode": "rw"}
                answer = await client.post(f"/devices/{session.device}/consoles", json=body)
                answer.raise_for_status()
                session.id, session.stream = answer.json()["id"], answer.json()["stream"]
                await attach(server, session, readers)

        await asyncio.gather(*(open_one(s) for s in sessions))
        figures.sessions = len(sessions)
        try:
            for machine in wiring.machines:
                await asyncio.to_thread(wiring.control.set_power, machine["bmc_port"], "on")

            async def into_setup(session: Session) -> None:
                await session.seen(b"SimBIOS")
                await session.send(F2)
                await session.seen(b"BIOS SETUP UTILITY")

            await asyncio.gather(*(into_setup(s) for s in sessions))
            figures.throughput = await redraw(sessions, server, wiring.pid)
            figures.throughput_alone = await redraw(sessions[:1], server, wiring.pid)

            async def to_login(session: Session) -> None:
                start = len(session.writer.data)
                await session.send(F10)
                await session.seen(b" login: ", start)

            await asyncio.gather(*(to_login(s) for s in sessions))
            await asyncio.sleep(0.5)  # the boot's last bytes reach every viewer
            figures.loaded = await type_keys(sessions, server)
            figures.alone = await type_keys(sessions[:1], server)
            await asyncio.sleep(0.5)
            figures.lost = lost_bytes(sessions)
            figures.errors = [
                f"{s.device}: {e}" for s in sessions for v in s.viewers for e in v.errors
            ]
            figures.cpu = _process_cpu(server.pid) - cpu
            figures.client_cpu = time.process_time() - client_cpu
            figures.rss_mib = server.peak_rss_mib()
        finally:
            for session in sessions:
                for viewer in session.viewers:
                    if viewer.socket is not None:
                        await viewer.socket.close()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    spare = wiring.machines[SESSIONS]
    box = next(b for b in wiring.servers if b["name"] == spare["console"]["server"])
    if shutil.which("ssh"):
        figures.ssh = await ssh_reference(box, spare["console"]["port"])


def report(figures: Figures) -> None:
    count = figures.sessions
    print(f"\n== consoles: {count} console-server sessions, {count * VIEWERS} viewers ==")
    print(
        f"keystrokes: {KEYSTROKES} per session, one each {KEY_INTERVAL * 1000:.0f} ms; "
        "latency ms = send to echo (aim p99 <= 20 ms)"
    )
    print(
        f"{'':<34} {'p50':>7} {'p99':>7} {'max':>7} {'w p50':>7} {'w p99':>7} {'ro p99':>7} "
        f"{'wrong':>6} {'CPU s':>6}"
    )
    print(figures.ssh.row("OpenSSH ssh, 1 session (reference)"))
    print(figures.alone.row("Rackhand, 1 session typing"))
    print(figures.loaded.row(f"Rackhand, {count} sessions typing"))
    if not figures.ssh.writer:
        print("  (no OpenSSH `ssh` here: no reference)")
    for name, ours in (("1 session", figures.alone), (f"{count} sessions", figures.loaded)):
        if figures.ssh.writer and ours.writer:
            ssh, mine = quantiles(figures.ssh.writer), quantiles(ours.writer + ours.readers)
            ratios = f"p50 x{mine[0] / ssh[0]:.1f}, p99 x{mine[1] / ssh[1]:.1f}"
            print(f"  ratio to ssh, {name}: {ratios}")
    print(
        f"throughput: {REDRAWS} BIOS setup screens per session "
        f"({figures.throughput.bytes / count / 1e6:.2f} MB), {WINDOW} in flight; "
        "MB/s as every viewer received it"
    )
    print(
        f"{'':<24} {'MB/s/session':>13} {'min':>6} {'total in':>9} {'to viewers':>11} "
        f"{'wall s':>7} {'CPU s: central':>15} {'sim':>5} {'viewers':>8}"
    )
    for name, flow in (
        ("1 session", figures.throughput_alone),
        (f"{count} sessions", figures.throughput),
    ):
        per = flow.per_session or [0.0]
        print(
            f"{name:<24} {statistics.median(per):>13.2f} {min(per):>6.2f} "
            f"{flow.bytes / flow.wall / 1e6:>9.2f} {flow.bytes * VIEWERS / flow.wall / 1e6:>11.2f} "
            f"{flow.wall:>7.2f} {flow.cpu:>15.2f} {flow.sim_cpu:>5.2f} {flow.client_cpu:>8.2f}"
        )
    print(
        f"central: CPU {figures.cpu:.1f} s over the run, peak RSS {figures.rss_mib:.0f} MiB; "
        f"this client's CPU {figures.client_cpu:.1f} s"
    )
    lost = sum(figures.lost.values())
    print(f"bytes lost or different at read-only viewers: {lost}", end="")
    print(f" ({', '.join(f'{k}: {v}' for k, v in list(figures.lost.items())[:5])})" if lost else "")
    for error in figures.errors[:5]:
        print(f"  viewer error: {error}")


def run() -> None:
    figures = Figures()
    with fleet(SESSIONS + 1) as wiring, running("sqlite") as server:
        with httpx.Client(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=60,
        ) as client:
            catalogue(client, wiring, wiring.machines[:SESSIONS])
        asyncio.run(scenario(server, wiring, figures))
    report(figures)
