"""Serving a fleet until signalled: in this process, or split over child processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

import uvloop

from sim.control import serve_control, serve_relay
from sim.fleet import CONSOLE_SERVER, HYPERVISOR, PDU, DeviceSpec, start_fleet, wiring_unit

Saved = dict[int, dict[str, Any]]
Wiring = dict[str, Any]
NOUNS = {CONSOLE_SERVER: "console server", PDU: "PDU", HYPERVISOR: "hypervisor"}
T = TypeVar("T")


def stop_event(*others: int) -> asyncio.Event:
    """Set by SIGTERM or SIGINT, or once one of the given descriptors becomes readable.

    Made before the fleet says it listens: a SIGTERM right after that line must stop it cleanly.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    for descriptor in others:
        loop.add_reader(descriptor, stop.set)
    return stop


async def until_signalled(*others: int) -> None:
    """Wait for SIGTERM or SIGINT, or for one of the given descriptors to become readable."""
    await stop_event(*others).wait()


async def serve(
    ports: range,
    settings: dict[str, Any],
    control_port: int | None,
    saved: Saved,
    ready: Callable[[tuple[int | None, Wiring]], None],
    watched: tuple[int, ...] = (),
) -> Saved:
    """Run one process's BMCs, SSH devices and control channel until signalled (or `watched`).

    `ready` gets the control port and the wiring once everything listens.
    """
    fleet = await start_fleet(len(ports), ports.start, saved=saved, **settings)
    server = None
    if control_port is not None:
        server = await serve_control(fleet, settings["host"], control_port)
    try:
        stop = stop_event(*watched)
        ready((server.sockets[0].getsockname()[1] if server else None, fleet.wiring()))
        await stop.wait()
    finally:
        if server:
            server.close()
        state = fleet.saved_state()
        await fleet.close()
    return state


def announce(
    host: str, ports: range, control_port: int | None, wiring: Wiring, full: bool = False
) -> None:
    """Tell whoever started the fleet that it is up (the last line says so).

    With SSH devices, an `ssh:` line says where they listen; `full` prints instead a `wiring:
    {json}` line (as the control channel's `wiring`), credentials included, for programs.
    """
    if control_port is not None:
        print(f"control: {host}:{control_port}", flush=True)
    if full and wiring.get("devices"):
        print(f"wiring: {json.dumps(wiring, separators=(',', ':'))}", flush=True)
    elif wiring.get("devices"):
        print(f"ssh: {ssh_summary(wiring['devices'])} (--wiring: credentials)", flush=True)
    print(f"listening: {len(ports)} BMCs on {host}:{ports[0]}-{ports[-1]}", flush=True)


def ssh_summary(devices: Sequence[dict[str, Any]]) -> str:
    """`3 console servers, 3 PDUs on 127.0.0.1:16300-16305`, from the wiring's devices."""
    counts = Counter(device["kind"] for device in devices)
    kinds = ", ".join(f"{n} {NOUNS[kind]}{'s' * (n > 1)}" for kind, n in counts.items())
    ports = sorted(device["port"] for device in devices)
    if len(ports) > 1 and ports[-1] - ports[0] == len(ports) - 1:
        span = f"{ports[0]}-{ports[-1]}"
    else:
        span = ",".join(map(str, ports))
    return f"{kinds} on {devices[0]['address']}:{span}"


def split(ports: range, processes: int, unit: int = 1) -> list[range]:
    """Consecutive slices of the ports, one per process, cut only at multiples of `unit`."""
    groups = -(-len(ports) // unit)
    if processes > groups:
        raise ValueError(f"{len(ports)} BMCs in groups of {unit} cannot fill {processes} processes")
    share, extra = divmod(groups, processes)
    parts, first = [], ports.start
    for index in range(processes):
        stop = min(first + (share + (index < extra)) * unit, ports.stop)
        parts.append(range(first, stop))
        first = stop
    return parts


def devices_of(part: range, devices: Sequence[DeviceSpec], last: bool) -> list[DeviceSpec]:
    """The devices wired to machines of `part` (devices with no machine go to the last part)."""
    return [d for d in devices if (d.wired[0] in part if d.wired else last)]


def child(ports: range, settings: dict[str, Any], saved: Saved, parent: Connection) -> None:
    """One process of a multi-process fleet: sends its control port, then its final state."""
    parent_process = multiprocessing.parent_process()
    orphaned = (parent_process.sentinel,) if parent_process else ()  # stop if the parent dies
    try:
        state = uvloop.run(serve(ports, settings, 0, saved, parent.send, orphaned))
    except OSError as error:
        parent.send(f"BMC ports {ports.start}-{ports.stop - 1} and their devices: {error}")
        raise SystemExit(1) from error
    with contextlib.suppress(BrokenPipeError):
        parent.send(state)


def run(
    ports: range,
    processes: int,
    settings: dict[str, Any],
    control_port: int | None,
    saved: Saved,
    *,
    full_wiring: bool = False,
    watched: tuple[int, ...] = (),
) -> Saved:
    """Serve the fleet until SIGTERM/SIGINT (or `watched` is readable); the final state by port.

    `settings["devices"]` (SSH devices) run in the process of the machines they are wired to.
    `full_wiring` announces the whole wiring, credentials included (see `announce`).
    """
    if processes == 1:
        ready = partial(_announce_ready, settings["host"], ports, full_wiring)
        return uvloop.run(serve(ports, settings, control_port, saved, ready, watched))
    devices: list[DeviceSpec] = list(settings.get("devices", ()))
    context = multiprocessing.get_context("spawn")
    children: list[tuple[BaseProcess, Connection, range]] = []
    parts = split(ports, processes, wiring_unit(devices))
    for index, part in enumerate(parts):
        mine = devices_of(part, devices, last=index == len(parts) - 1)
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=child,
            args=(part, {**settings, "devices": mine}, _within(saved, part), sender),
        )
        process.start()
        sender.close()
        children.append((process, receiver, part))
    try:
        readies = [(part, _receive(receiver, part, tuple)) for _, receiver, part in children]
        slices = [(part, control) for part, (control, _) in readies]
        wiring: Wiring = {"devices": [], "machines": []}
        owners: dict[str, int] = {}
        for _, (control, part_wiring) in readies:
            wiring["devices"] += part_wiring["devices"]
            wiring["machines"] += part_wiring["machines"]
            owners.update((device["name"], control) for device in part_wiring["devices"])
        ends = [*(worker.sentinel for worker, _, _ in children), *watched]
        host = settings["host"]
        asyncio.run(relay(host, ports, slices, control_port, ends, wiring, owners, full_wiring))
        for worker, _, part in children:
            if not worker.is_alive():
                raise OSError(f"the process of BMC ports {part.start}-{part.stop - 1} died")
    finally:
        state: Saved = {}
        for worker, receiver, part in children:
            worker.terminate()
            with contextlib.suppress(OSError):
                state.update(_receive(receiver, part, dict) if receiver.poll(10) else {})
            worker.join(10)
    return state


def _announce_ready(host: str, ports: range, full: bool, ready: tuple[int | None, Wiring]) -> None:
    announce(host, ports, *ready, full)


def _within(saved: Saved, ports: range) -> Saved:
    return {port: value for port, value in saved.items() if port in ports}


def _receive(receiver: Connection, ports: range, kind: type[T]) -> T:
    """The next message of a child; its error text, or its death, as OSError."""
    try:
        message = receiver.recv()
    except EOFError:
        message = f"the process of BMC ports {ports.start}-{ports.stop - 1} died"
    if not isinstance(message, kind):
        raise OSError(message)
    return message


async def relay(
    host: str,
    ports: range,
    slices: list[tuple[range, int]],
    control_port: int | None,
    ends: list[int],
    wiring: Wiring,
    owners: dict[str, int],
    full: bool = False,
) -> None:
    """The parent's part: one control port for all children.

    Ends on a signal or when one of `ends` is readable (a dead child, a watched descriptor).
    """
    server = None
    if control_port is not None:
        server = await serve_relay(slices, host, control_port, wiring, owners)
    stop = stop_event(*ends)
    announce(host, ports, server.sockets[0].getsockname()[1] if server else None, wiring, full)
    await stop.wait()
    if server:
        server.close()
