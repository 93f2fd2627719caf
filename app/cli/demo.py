"""The simulated devices of `rackhand serve --demo`: one `python -m sim` beside the server.

The simulator hands us its wiring (every credential and host key) on a pipe; the operator
gets one summary line, and the credentials only with `--verbose`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import typer

from app.inventory.demo import (
    CONSOLE_BOXES,
    DEMO_PASSWORD,
    FIRST_SSH_PORT,
    PDU_BOXES,
    demo_fleet_args,
)

WIRING, LISTENING = "wiring: ", "listening: "
# The catalogue's names of the simulator's SSH devices (cs1… then pdu1…), by SSH port.
BOXES = {FIRST_SSH_PORT + i: name for i, (name, _) in enumerate((*CONSOLE_BOXES, *PDU_BOXES))}


@contextlib.contextmanager
def demo_fleet(data_dir: Path, verbose: bool) -> Iterator[str]:
    """Run the demo's BMCs, console servers and PDUs on 127.0.0.1; yields a summary line.

    Their SSH host keys are kept in the data folder: pinned on first contact, they must not
    change at the next `make run`. The simulator watches the pipe on its standard input, so it
    stops with us even when we are killed (it would hold the demo's ports otherwise).
    """
    keys = ["--host-key-dir", str(data_dir / "sim-host-keys")]
    command = [sys.executable, "-m", "sim", *demo_fleet_args(), *keys]
    fleet = subprocess.Popen(
        [*command, "--wiring", "--stop-with-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wiring = _wiring(fleet)
        if verbose:
            typer.echo("\n".join(credentials(wiring)))
        yield summary(wiring, verbose)
    finally:
        fleet.terminate()
        fleet.wait(timeout=10)


def _wiring(fleet: subprocess.Popen[str]) -> dict[str, Any]:
    """The simulator's `wiring:` line, once it says it listens (exit 1 if it never does)."""
    assert fleet.stdout is not None  # Popen(stdout=PIPE) made it
    wiring: dict[str, Any] = {"devices": [], "machines": []}
    for line in fleet.stdout:
        if line.startswith(WIRING):
            wiring = json.loads(line.removeprefix(WIRING))
        elif line.startswith(LISTENING):
            fleet.stdout.close()  # nothing more comes on it
            return wiring
    fleet.wait(timeout=10)
    typer.echo(
        "error: the demo's simulated devices did not start (their reason is above; is another "
        "`rackhand serve --demo` running?)",
        err=True,
    )
    raise typer.Exit(1)


def summary(wiring: dict[str, Any], verbose: bool) -> str:
    """`demo: 48 simulated BMCs on 127.0.0.1:16230-16277, 6 SSH devices on …`."""
    bmcs = [machine["bmc_port"] for machine in wiring["machines"]]
    devices = wiring["devices"]
    where = "printed above" if verbose else "rackhand serve --demo --verbose"
    return (
        f"demo: {len(bmcs)} simulated BMCs on 127.0.0.1:{_span(bmcs)}, {len(devices)} SSH "
        f"devices on 127.0.0.1:{_span([d['port'] for d in devices])}; credentials: {where}"
    )


def credentials(wiring: dict[str, Any]) -> list[str]:
    """How to reach each simulated device by hand, one line each."""
    bmcs = _span([machine["bmc_port"] for machine in wiring["machines"]])
    lines = [
        "demo devices (simulated on 127.0.0.1):",
        f"  BMCs      IPMI 2.0 on UDP 127.0.0.1:{bmcs}, user admin, password {DEMO_PASSWORD}",
    ]
    for device in wiring["devices"]:
        name = BOXES.get(device["port"], device["name"])
        lines.append(
            f"  {name:<9} ssh -p {device['port']} {device['username']}@{device['address']}, "
            f"password {device['password']}, host key {device['host_key']} ({device['dialect']})"
        )
    return lines


def _span(ports: Sequence[int]) -> str:
    """`16230-16277` for consecutive ports, else the list."""
    ordered = sorted(ports)
    if len(ordered) > 1 and ordered[-1] - ordered[0] == len(ordered) - 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))
