"""The fleet's control channel: JSON lines over TCP, to read machines and switch faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from sim.fleet import Fleet
from sim.ipmi import Bmc
from sim.machine import Power

FAULTS = ("slow", "mute", "refuse_password", "drop_sessions", "ignore_soft_off")

Message = dict[str, Any]


class ControlError(RuntimeError):
    """The control channel refused a request."""


def state(bmc: Bmc) -> Message:
    """A BMC's machine, faults, offered suites and open sessions, as JSON-ready data."""
    faults = bmc.faults
    return {
        **bmc.machine.snapshot(),
        "faults": {
            "slow": faults.slow_ms,
            "mute": faults.mute,
            "refuse_password": faults.refuse_password,
        },
        "suites": list(bmc.suites),
        "sessions": len(bmc.sessions),
        "duplicates": bmc.duplicates,
    }


def apply(fleet: Fleet, request: Message) -> Message:
    """Run one control request against the fleet; raises KeyError/ValueError/TypeError."""
    op, bmc = request["op"], fleet.bmc(request["port"])
    if op == "set":
        if "fault" in request:
            set_fault(bmc, request["fault"], request.get("value", True))
        if "power" in request:
            bmc.machine.press(Power(request["power"]))
        if "suites" in request:
            bmc.suites = request["suites"]
    elif op != "get":
        raise ValueError(f"unknown op {op!r}")
    return {"ok": True, "state": state(bmc)}


def set_fault(bmc: Bmc, fault: str, value: Any) -> None:
    """Switch one fault; `drop_sessions` acts once, `slow` takes milliseconds (0 turns it off)."""
    if fault == "slow":
        bmc.faults.slow_ms = int(value)
    elif fault == "mute":
        bmc.faults.mute = bool(value)
    elif fault == "refuse_password":
        bmc.faults.refuse_password = bool(value)
    elif fault == "drop_sessions":
        if value:
            bmc.drop_sessions()
    elif fault == "ignore_soft_off":
        bmc.machine.ignore_soft_off = bool(value)
    else:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")


async def serve_lines(
    handle: Callable[[bytes], Awaitable[bytes]], host: str, port: int
) -> asyncio.Server:
    """A TCP server that answers each request line with one reply line."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(await handle(line))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(connection, host, port)


async def serve_control(fleet: Fleet, host: str, port: int) -> asyncio.Server:
    """Serve the control channel of the fleet of this process."""

    async def handle(line: bytes) -> bytes:
        try:
            reply = apply(fleet, json.loads(line))
        except (KeyError, ValueError, TypeError) as error:
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        return json.dumps(reply).encode() + b"\n"

    return await serve_lines(handle, host, port)


async def serve_relay(slices: list[tuple[range, int]], host: str, port: int) -> asyncio.Server:
    """Serve the control channel of several processes by passing each line to the right one."""
    links: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    lock = asyncio.Lock()

    async def handle(line: bytes) -> bytes:
        try:
            target = json.loads(line)["port"]
            control_port = next(control for ports, control in slices if target in ports)
        except (KeyError, ValueError, TypeError, StopIteration):
            return json.dumps({"ok": False, "error": "KeyError: no such BMC port"}).encode() + b"\n"
        async with lock:
            if control_port not in links:
                links[control_port] = await asyncio.open_connection(host, control_port)
            reader, writer = links[control_port]
            writer.write(line.rstrip(b"\n") + b"\n")
            await writer.drain()
            return await reader.readline()

    return await serve_lines(handle, host, port)


class FleetControl:
    """A blocking client of the control channel, for tests and scripts."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        self._socket = socket.create_connection((host, port), timeout=timeout)
        self._stream = self._socket.makefile("rwb")

    def request(self, message: Message) -> Message:
        self._stream.write(json.dumps(message).encode() + b"\n")
        self._stream.flush()
        reply: Message = json.loads(self._stream.readline())
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "no answer"))
        return reply

    def state(self, port: int) -> Message:
        state: Message = self.request({"op": "get", "port": port})["state"]
        return state

    def set_fault(self, port: int, fault: str, value: Any = True) -> Message:
        state: Message = self.request({"op": "set", "port": port, "fault": fault, "value": value})[
            "state"
        ]
        return state

    def set_power(self, port: int, power: str) -> Message:
        state: Message = self.request({"op": "set", "port": port, "power": power})["state"]
        return state

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.close()
        self._socket.close()

    def __enter__(self) -> FleetControl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
