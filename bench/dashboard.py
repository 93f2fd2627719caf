"""The dashboard at 100,000 devices: server time of each page, the device list in a browser.

Reference measured in the same run: the JSON API answering the same question (the page must
cost little more than the data it shows). Server time is the time to the first byte over
loopback, which on this machine is the server's own time plus well under a millisecond.
"""

from __future__ import annotations

import contextlib
import os
import pty
import random
import select
import shutil
import signal
import statistics
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.catalogue import DEVICES, SITES, fleet_rows, import_rows, make_sites
from bench.server import ADMIN_PASSWORD, Server, running

ROUNDS = 40
CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True)
class Probe:
    name: str
    page: str  # a dashboard URL
    api: str | None  # the API call that answers the same question, for the ratio


def _probes(rng: random.Random) -> list[Probe]:
    site = f"site-{rng.randrange(SITES):02d}"
    first = rng.randrange(0, 1800)
    picked = f"s{site[-2:]}-node[{first:05d}-{first + 199:05d}]"
    device = f"s{site[-2:]}-node{first:05d}"
    return [
        Probe("overview /", "/", None),
        Probe("device list, first page", "/devices", "/api/v1/devices?limit=100"),
        Probe(
            "device list, site+tag+range",
            f"/devices?site={site}&tag=web&select={picked}",
            f"/api/v1/devices?site={site}&tag=web&select={picked}&limit=100",
        ),
        Probe("device page", f"/devices/{device}", f"/api/v1/devices/{device}"),
        Probe("site page (20 racks)", f"/sites/{site}", f"/api/v1/racks?site={site}"),
        Probe("audit page", "/audit", "/api/v1/audit?limit=100"),
    ]


def _ttfb(client: httpx.Client, url: str) -> float:
    """Milliseconds to the first byte of the answer (the body is read afterwards)."""
    started = time.perf_counter()
    with client.stream("GET", url) as response:
        first = (time.perf_counter() - started) * 1000
        response.read()
        response.raise_for_status()
    return first


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _pages(server: Server) -> list[tuple[str, list[float], list[float]]]:
    login = {"username": "admin", "password": ADMIN_PASSWORD}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        client.post("/api/v1/auth/login", json=login).raise_for_status()
        results = []
        for index in range(len(_probes(random.Random(0)))):
            rng = random.Random(11)
            pages, apis = [], []
            for _ in range(ROUNDS):
                probe = _probes(rng)[index]
                pages.append(_ttfb(client, probe.page))
                if probe.api:
                    apis.append(_ttfb(client, probe.api))
            results.append((_probes(random.Random(0))[index].name, pages, apis))
        return results


def _browser(server: Server) -> list[float]:
    """Milliseconds from navigation to the device list's rows shown, in Chromium."""
    from playwright.sync_api import sync_playwright

    timings = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context()
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        context.request.post(f"{server.url}/api/v1/auth/login", data=login)
        page = context.new_page()
        page.goto(f"{server.url}/devices")  # warm: vendored files cached as a returning user's
        rng = random.Random(5)
        for _ in range(10):
            site = f"site-{rng.randrange(SITES):02d}"
            started = time.perf_counter()
            page.goto(f"{server.url}/devices?site={site}&tag=web")
            page.locator("table tbody tr").first.wait_for(state="visible")
            timings.append((time.perf_counter() - started) * 1000)
        browser.close()
    return timings


def run() -> None:
    keystrokes()
    pages()


def pages() -> None:
    rows = fleet_rows()
    print(f"\n== dashboard: {DEVICES:,} devices, {SITES} sites; time to first byte, ms ==")
    for backend in ("sqlite", "postgresql"):
        with running(backend) as server:
            auth = {"Authorization": f"Bearer {server.token}"}
            with httpx.Client(base_url=f"{server.url}/api/v1", headers=auth, timeout=600) as api:
                make_sites(api)
                import_rows(api, rows)
            figures = _pages(server)
            browser = _browser(server) if shutil.which(CHROMIUM) else []
        print(f"{backend}: page p50 / p99 (aim p99 <= 200), and the JSON API's for the same data")
        for name, pages, apis in figures:
            api_part = (
                f"   API {_pct(apis, 50):6.1f} / {_pct(apis, 99):6.1f}   "
                f"page/API p50 x{_pct(pages, 50) / _pct(apis, 50):.1f}"
                if apis
                else ""
            )
            print(f"  {name:<30} {_pct(pages, 50):6.1f} / {_pct(pages, 99):6.1f}{api_part}")
        if browser:
            print(
                f"  Chromium, navigation to device rows shown: p50 {statistics.median(browser):.0f}"
                f" ms, max {max(browser):.0f} ms (10 filtered lists)"
            )


KEYS = 50
KEY_INTERVAL = 0.1  # s between keystrokes, as in bench.consoles
RACKHAND = str(Path(sys.executable).parent / "rackhand")


def _read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"{wanted!r} did not come; last: {seen[-200:]!r}")
        seen += os.read(fd, 65536)
    return seen


def _cli_echo(server: Server, device: str) -> list[float]:
    """`rackhand console` in a pseudo-terminal, as a person runs it: key to echo, ms."""
    env = os.environ | {"RACKHAND_URL": server.url, "RACKHAND_TOKEN": server.token}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on the pty
        os.execve(RACKHAND, [RACKHAND, "console", device], env)
    try:
        _read_until(fd, b" login: ", 90)
        latencies = []
        for key in string.ascii_lowercase * 2:
            started = time.perf_counter()
            os.write(fd, key.encode())
            _read_until(fd, key.encode(), 10)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(KEY_INTERVAL)
        os.write(fd, b"\x1d.")  # Ctrl-] . leaves; the session stays for the others
        return latencies[:KEYS]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)


# In the page: each key through xterm.js as if typed (onData → the WebSocket), until its echo is
# parsed into the terminal's buffer; milliseconds per key.
_TYPE_IN_PAGE = """
async ([keys, pause]) => {
  const term = window.rackhandTerminal;
  const line = () => {
    const b = term.buffer.active;
    return b.getLine(b.baseY + b.cursorY).translateToString(true);
  };
  const latencies = [];
  for (const key of keys) {
    const before = line().length;
    let disposable;
    const echoed = new Promise((resolve) => {
      disposable = term.onWriteParsed(() => { if (line().length > before) resolve(); });
    });
    const started = performance.now();
    term.input(key, true);
    const late = new Promise((_, reject) => setTimeout(() => reject(new Error("no echo")), 10000));
    await Promise.race([echoed, late]);
    latencies.push(performance.now() - started);
    disposable.dispose();
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
  return latencies;
}
"""


def _browser_echo(server: Server, console_id: str) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        context.request.post(f"{server.url}/api/v1/auth/login", data=login)
        page = context.new_page()
        page.goto(f"{server.url}/consoles/{console_id}")
        page.wait_for_function(
            "() => window.rackhandConsole?.screenText().includes(' login: ')",
            timeout=90_000,
        )
        keys = list((string.ascii_lowercase * 2)[:KEYS])
        latencies: list[float] = page.evaluate(_TYPE_IN_PAGE, [keys, KEY_INTERVAL * 1000])
        browser.close()
    return latencies


def _keystrokes() -> tuple[list[float], list[float]]:
    """Two simulated machines booting to their login prompt: one in `rackhand console`, one in
    the dashboard's console page; the same keys typed into each."""
    from bench.consoles import catalogue, fleet

    with fleet(2) as wiring, running("sqlite") as server:
        auth = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=f"{server.url}/api/v1", headers=auth, timeout=60) as api:
            catalogue(api, wiring, wiring.machines)
            body = {"via": "console_port", "mode": "rw"}
            opened = api.post(f"/devices/{wiring.machines[1]['name']}/consoles", json=body)
            opened.raise_for_status()
        for machine in wiring.machines:
            wiring.control.set_power(machine["bmc_port"], "on")
        cli = _cli_echo(server, wiring.machines[0]["name"])
        page = _browser_echo(server, opened.json()["id"])
    return cli, page


def keystrokes() -> None:
    if not shutil.which(CHROMIUM):
        print("\n== dashboard console: no Chromium here (make peers) ==")
        return
    cli, page = _keystrokes()
    pace = f"{KEYS} keys one each {KEY_INTERVAL * 1000:.0f} ms"
    print(f"\n== dashboard console: keystroke to echo, {pace} ==")
    for name, values in (("rackhand console (CLI, a pty)", cli), ("browser (xterm.js page)", page)):
        p50, p99 = _pct(values, 50), _pct(values, 99)
        print(f"  {name:<32} p50 {p50:5.1f} ms  p99 {p99:5.1f} ms  max {max(values):5.1f} ms")
    ratio50, ratio99 = _pct(page, 50) / _pct(cli, 50), _pct(page, 99) / _pct(cli, 99)
    print(f"  browser/CLI p50 x{ratio50:.2f}, p99 x{ratio99:.2f}")
