"""`make fuzz`: schemathesis against a real `rackhand serve`, on SQLite and on PostgreSQL.

Every operation of the published OpenAPI document gets valid and invalid inputs from an
admin of all sites (the caller who reaches the most code), on a seeded catalogue. The figures
(requests, answers by status class, 5xx by operation) go into docs/security.md. A 5xx is a
finding, apart from 502 (a device that cannot be reached is the device's failure, not ours).
The run is in a network namespace with only loopback: invented control paths reach nothing.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.server import Server, running

EXAMPLES = int(os.environ.get("RACKHAND_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("RACKHAND_FUZZ_SEED", "1"))
# Logging out would end the fuzzer's own login half-way.
EXCLUDED = ["/api/v1/auth/logout"]
ISOLATED = "RACKHAND_FUZZ_ISOLATED"  # set inside the network namespace
POSTGRES_SOCKET = os.environ.get("RACKHAND_FUZZ_POSTGRES_SOCKET", "/var/run/postgresql")
CATALOGUE = [
    {"name": "web01", "kind": "server", "site": "bj-dc1", "rack": "A01", "position_u": 1},
    {"name": "web02", "kind": "server", "site": "sh-br12"},
    {"name": "cs-01", "kind": "console_server", "site": "bj-dc1"},
    {"name": "pdu-a1", "kind": "pdu", "site": "bj-dc1"},
    {"name": "hv01", "kind": "hypervisor", "site": "bj-dc1"},
    {"name": "vm1", "kind": "vm", "site": "bj-dc1", "parent": "hv01"},
]


def _seed(server: Server) -> None:
    """Objects for the generated references to hit (a BMC address nothing answers on)."""
    with httpx.Client(
        base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {server.token}"}
    ) as api:
        for slug in ("bj-dc1", "sh-br12"):
            api.post("sites", json={"slug": slug, "name": slug}).raise_for_status()
        api.post("racks", json={"site": "bj-dc1", "name": "A01"}).raise_for_status()
        api.post("devices/import", content=json.dumps(CATALOGUE)).raise_for_status()
        path = {"kind": "ipmi", "address": "127.0.0.1", "port": 9, "username": "u", "secret": "p"}
        api.post("devices/web01/paths", json=path).raise_for_status()


def _statuses(report: Path) -> collections.Counter[tuple[str, int]]:
    """(operation, status) of every answer recorded in schemathesis's NDJSON report."""
    seen: collections.Counter[tuple[str, int]] = collections.Counter()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            request, response = node.get("request"), node.get("response")
            if (
                isinstance(request, dict)
                and isinstance(response, dict)
                and "status_code" in response
            ):
                url = str(request.get("uri") or request.get("url") or "")
                seen[
                    (f"{request.get('method')} {url.split('?')[0]}", int(response["status_code"]))
                ] += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for line in report.read_text().splitlines():
        walk(json.loads(line))
    return seen


def fuzz(backend: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rackhand-fuzz-") as folder:
        log, report = Path(folder) / "server.log", Path(folder) / "events.ndjson"
        with running(backend, log=log) as server:
            _seed(server)
            started = time.monotonic()
            command = [
                str(Path(sys.executable).parent / "schemathesis"), "run",
                f"{server.url}/api/v1/openapi.json",
                "--header", f"Authorization: Bearer {server.token}",
                "--checks", "not_a_server_error",
                "--max-examples", str(EXAMPLES), "--seed", str(SEED),
                "--phases", "examples,coverage,fuzzing",
                "--workers", "2", "--no-color", "--request-timeout", "60",
                "--suppress-health-check", "all", "--generation-database", "none",
                "--report", "ndjson", "--report-ndjson-path", str(report),
                *[arg for path in EXCLUDED for arg in ("--exclude-path", path)],
            ]  # fmt: skip
            subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
            seconds = time.monotonic() - started
        statuses = _statuses(report)
        tracebacks = log.read_text(errors="replace").count("Traceback (most recent call last)")
    by_class = collections.Counter(
        f"{status // 100}xx" for (_, status), n in statuses.items() for _ in range(n)
    )
    errors = {
        f"{op} -> {status}": n for (op, status), n in sorted(statuses.items()) if status >= 500
    }
    return {
        "backend": backend,
        "requests": sum(statuses.values()),
        "seconds": round(seconds),
        "by_class": dict(sorted(by_class.items())),
        "server_errors": errors,
        "tracebacks_in_log": tracebacks,
    }


def run() -> None:
    if os.environ.get(ISOLATED) != "1":
        sys.exit(_isolated())
    for backend in sys.argv[1:] or ["sqlite", "postgresql"]:
        print(json.dumps(fuzz(backend), indent=2), flush=True)


def _isolated() -> int:
    """Run again in a network namespace of our own with only loopback up: the fuzzer writes
    control paths to addresses it invents and the server really tries them, so nothing it
    sends may leave this machine. PostgreSQL is reached through its Unix socket there."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print(
            "make fuzz needs root and unshare(1): it runs in a network namespace", file=sys.stderr
        )
        return 2
    env = os.environ | {
        ISOLATED: "1",
        "RACKHAND_BENCH_POSTGRES": "postgres@",
        "RACKHAND_BENCH_POSTGRES_QUERY": f"?host={POSTGRES_SOCKET}",
    }
    script = 'ip link set lo up && exec "$0" -m bench.fuzz "$@"'
    command = ["unshare", "--net", "sh", "-c", script, sys.executable, *sys.argv[1:]]
    return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    run()
