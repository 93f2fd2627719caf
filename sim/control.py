"""The fleet's control channel: JSON lines over TCP, to read machines and switch faults.

Requests: `{"op": "get"|"set", "port": BMC port, ...}`, `{"op": "wiring"}` (SSH devices and what
each machine is wired to), `{"op": "outlet", "pdu": name, "outlet": n[, "power": on|off|cycle]}`,
`{"op": "console_port", "server": name, "port": n}` (holder and counters), `{"op": "guest",
"hypervisor": name, "guest": name}` (a hypervisor guest's domid, boot order and screen),
`{"op": "sensor", "port": BMC port, "sensor": name, "value": number|null}` (hold a threshold
sensor at a reading; null lets it read on its own), `{"op": "sensor", "port": ..., "sensor":
"PSU2", "state": "ok"|"failed"|"ac_lost"|"absent"}` and `{"op": "sensor", "port": ...,
"reset": true}` (every sensor back to normal); each answers with the machine's sensors.
"""

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
from sim.sensors import PsuState

FAULTS = ("slow", "mute", "refuse_password", "drop_sessions", "ignore_soft_off")

Message = dict[str, Any]


class ControlError(RuntimeError):
    """The control channel refused a request."""


def state(bmc: Bmc) -> Message:
    """A BMC's machine, faults, offered suites and open sessions, as JSON-ready data."""
    faults = bmc.faults
    return {
        **bmc.machine.snapshot(),
        "ac": bmc.machine.ac,
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
    op = request["op"]
    if op == "wiring":
        return {"ok": True, "wiring": fleet.wiring()}
    if op == "outlet":
        pdu = fleet.pdu(request["pdu"])
        outlet = pdu.outlets[int(request["outlet"])]
        if "power" in request:
            if request["power"] not in ("on", "off", "cycle"):
                raise ValueError(f"unknown outlet power {request['power']!r}")
            pdu.switch([outlet], request["power"])
        return {"ok": True, "state": outlet.state()}
    if op == "guest":
        return {
            "ok": True,
            "state": fleet.hypervisor(request["hypervisor"]).guest(request["guest"]).state(),
        }
    if op == "console_port":
        server = fleet.console_server(request["server"])
        return {"ok": True, "state": server.ports[int(request["port"])].state()}
    bmc = fleet.bmc(request["port"])
    if op == "sensor":
        return {"ok": True, "sensors": set_sensor(bmc, request)}
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


def set_sensor(bmc: Bmc, request: Message) -> Message:
    """Run a `sensor` request (reset, a reading or a PSU state); the sensors after it."""
    sensors = bmc.machine.sensors
    if request.get("reset"):
        sensors.reset()
    if "state" in request:
        sensors.set_state(request["sensor"], PsuState(request["state"]))
    if "value" in request:
        value = request["value"]
        sensors.set_value(request["sensor"], None if value is None else float(value))
    return sensors.snapshot()


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


async def serve_relay(
    slices: list[tuple[range, int]],
    host: str,
    port: int,
    wiring: Message | None = None,
    owners: dict[str, int] | None = None,
) -> asyncio.Server:
    """Serve the control channel of several processes by passing each line to the right one.

    BMC requests go by port, device requests by the device's name (`owners`: name -> the
    control port of its process); the parent answers `wiring` itself (all processes merged).
    """
    links: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    lock = asyncio.Lock()

    async def handle(line: bytes) -> bytes:
        try:
            request = json.loads(line)
            if request["op"] == "wiring":
                return json.dumps({"ok": True, "wiring": wiring or {}}).encode() + b"\n"
            device = request.get("pdu", request.get("server", request.get("hypervisor")))
            if request["op"] in ("outlet", "console_port", "guest"):
                control_port = (owners or {})[device]
            else:
                target = request["port"]
                control_port = next(control for ports, control in slices if target in ports)
        except (KeyError, ValueError, TypeError, AttributeError, StopIteration):
            error = "KeyError: no such BMC port or device"
            return json.dumps({"ok": False, "error": error}).encode() + b"\n"
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

    def sensors(self, port: int) -> Message:
        """A machine's readings, PSU states and health (see `Sensors.snapshot`)."""
        return self._sensor({"port": port})

    def set_sensor(self, port: int, sensor: str, value: float | None) -> Message:
        """Hold a threshold sensor at `value` in its units (None: back to its own reading)."""
        return self._sensor({"port": port, "sensor": sensor, "value": value})

    def set_psu(self, port: int, sensor: str, state: str) -> Message:
        """Make a power supply `failed`, `ac_lost`, `absent` or `ok` again."""
        return self._sensor({"port": port, "sensor": sensor, "state": state})

    def reset_sensors(self, port: int) -> Message:
        return self._sensor({"port": port, "reset": True})

    def _sensor(self, request: Message) -> Message:
        sensors: Message = self.request({"op": "sensor", **request})["sensors"]
        return sensors

    def wiring(self) -> Message:
        """SSH devices and the console port and outlets of each machine (see `Fleet.wiring`)."""
        wiring: Message = self.request({"op": "wiring"})["wiring"]
        return wiring

    def outlet(self, pdu: str, outlet: int, power: str | None = None) -> Message:
        """An outlet's state, after switching it `on`, `off` or `cycle` if asked."""
        request: Message = {"op": "outlet", "pdu": pdu, "outlet": outlet}
        if power is not None:
            request["power"] = power
        state: Message = self.request(request)["state"]
        return state

    def console_port(self, server: str, port: int) -> Message:
        state: Message = self.request({"op": "console_port", "server": server, "port": port})[
            "state"
        ]
        return state

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.close()
        self._socket.close()

    def __enter__(self) -> FleetControl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
