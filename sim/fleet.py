"""Many BMCs in one event loop, one UDP port each, and the SSH devices wired to their machines.

Hypervisor hosts are SSH devices too, with guests of their own rather than wired machines.
"""

from __future__ import annotations

import asyncio
import math
import resource
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import asyncssh

from sim.console_server import ConsoleServer
from sim.hypervisor import Hypervisor
from sim.ipmi import Bmc, BmcProtocol
from sim.machine import Machine, Timing
from sim.pdu import CYCLE_DELAY, Feed, Pdu
from sim.sensors import PsuState
from sim.ssh import SshDevice, host_key

GUID_NAMESPACE = uuid.UUID("5d1b1c9e-4c1e-4f57-9a55-7b0c2f0e6a11")
SAVED_KEYS = ("power", "boot_device", "boot_persistent", "boot_efi")
CONSOLE_SERVER, PDU, HYPERVISOR = "console_server", "pdu", "hypervisor"


@dataclass(frozen=True)
class DeviceSpec:
    """One SSH device to start, and the BMC ports of the machines on its ports / outlets 1, 2…"""

    kind: str  # CONSOLE_SERVER, PDU or HYPERVISOR
    name: str
    dialect: str  # a hypervisor's: xl, libvirt or xl+libvirt
    ssh_port: int  # 0: any free port
    slots: int  # ports, outlets, or a hypervisor's guests
    wired: tuple[int, ...]
    cycle_delay: float = CYCLE_DELAY
    authorized_keys: tuple[str, ...] = ()  # OpenSSH public key lines a hypervisor accepts


def plan_hypervisors(
    count: int, guests: int, dialects: Sequence[str], ssh_port: int, keys: Sequence[str] = ()
) -> list[DeviceSpec]:
    """`count` hypervisor hosts hv1, hv2… of `guests` guests each, dialects in turn."""
    return [
        DeviceSpec(
            HYPERVISOR,
            f"hv{index + 1}",
            dialects[index % len(dialects)],
            ssh_port + index if ssh_port else 0,
            guests,
            (),
            authorized_keys=tuple(keys),
        )
        for index in range(count)
    ]


def add_guests(host: Hypervisor, count: int) -> None:
    """`<host>-vm01`… with stable uuids; the first half running, toolstacks in turn."""
    stacks = sorted(host.toolstacks, reverse=True)  # xl first
    for index in range(count):
        name = f"{host.name}-vm{index + 1:02d}"
        host.add_guest(
            name,
            stacks[index % len(stacks)],
            uuid=str(uuid.uuid5(GUID_NAMESPACE, f"{host.name}/{name}")),
            vcpus=1 + index % 2,
            memory_mib=512 * (1 + index % 4),
            boot="cd" if index % 3 == 2 else "c",
            running=index < (count + 1) // 2,
            autostart=index == 0,
        )


def plan_devices(
    bmc_ports: range,
    kind: str,
    count: int,
    slots: int,
    dialects: Sequence[str],
    ssh_port: int,
    cycle_delay: float = CYCLE_DELAY,
) -> list[DeviceSpec]:
    """`count` devices of one kind, dialects in turn; machine i on device i // slots.

    Machine i takes slot i % slots + 1. Devices are named cs1, cs2… or pdu1, pdu2…; their SSH
    ports follow `ssh_port` (0: any free port each).
    """
    prefix = "cs" if kind == CONSOLE_SERVER else "pdu"
    return [
        DeviceSpec(
            kind,
            f"{prefix}{index + 1}",
            dialects[index % len(dialects)],
            ssh_port + index if ssh_port else 0,
            slots,
            tuple(bmc_ports[index * slots : (index + 1) * slots]),
            cycle_delay,
        )
        for index in range(count)
    ]


def wiring_unit(devices: Sequence[DeviceSpec]) -> int:
    """Machines come in groups of this size that must share a process with their devices."""
    return math.lcm(1, *(device.slots for device in devices if device.wired))


class Fleet:
    """Running BMCs by port; `close()` releases their ports."""

    def __init__(self, host: str, bmcs: dict[int, Bmc], transports: list[asyncio.BaseTransport]):
        self.host = host
        self._bmcs = bmcs
        self._transports = transports
        self.devices: dict[str, SshDevice] = {}
        self._links: dict[int, dict[str, Any]] = {}  # BMC port -> its console port and outlets

    @property
    def ports(self) -> list[int]:
        return list(self._bmcs)

    def bmc(self, port: int) -> Bmc:
        """The BMC on a port (KeyError if the fleet has none there)."""
        return self._bmcs[port]

    def machine(self, port: int) -> Machine:
        return self._bmcs[port].machine

    def console_server(self, name: str) -> ConsoleServer:
        device = self.devices[name]
        if not isinstance(device, ConsoleServer):
            raise KeyError(f"{name} is not a console server")
        return device

    def hypervisor(self, name: str) -> Hypervisor:
        device = self.devices[name]
        if not isinstance(device, Hypervisor):
            raise KeyError(f"{name} is not a hypervisor")
        return device

    def pdu(self, name: str) -> Pdu:
        device = self.devices[name]
        if not isinstance(device, Pdu):
            raise KeyError(f"{name} is not a PDU")
        return device

    async def start_devices(
        self, specs: Sequence[DeviceSpec], users: Mapping[str, str], key_dir: Path | None
    ) -> None:
        """Start SSH devices wired to machines of this fleet (their BMC ports must be here)."""
        feeds: dict[int, Feed] = {}
        for spec in specs:
            key = host_key(spec.name, key_dir)
            device: SshDevice
            if spec.kind == HYPERVISOR:
                keys = [asyncssh.import_public_key(line) for line in spec.authorized_keys]
                device = host = Hypervisor(
                    spec.name, spec.dialect, users, key, authorized_keys=keys
                )
                add_guests(host, spec.slots)
            elif spec.kind == CONSOLE_SERVER:
                device = server = ConsoleServer(spec.name, spec.dialect, spec.slots, users, key)
                for number, port in enumerate(spec.wired, 1):
                    machine = self.machine(port)
                    label = server.wire(number, machine.name, machine.serial).label
                    console = {"server": spec.name, "port": number, "label": label}
                    self._links.setdefault(port, {})["console"] = console
            else:
                device = pdu = Pdu(spec.name, spec.dialect, spec.slots, users, key)
                pdu.cycle_delay = spec.cycle_delay
                for number, port in enumerate(spec.wired, 1):
                    machine = self.machine(port)
                    feed = feeds.setdefault(port, Feed(machine))
                    pdu.wire(number, feed, machine.name)
                    link = self._links.setdefault(port, {}).setdefault("pdu", [])
                    link.append({"pdu": spec.name, "outlet": number})
            self.devices[spec.name] = device
            await device.start(self.host, spec.ssh_port)

    def wiring(self) -> dict[str, Any]:
        """SSH devices (address, credentials, host key) and what each machine is wired to."""
        machines = [
            {
                "bmc_port": port,
                "name": bmc.machine.name,
                "console": self._links.get(port, {}).get("console"),
                "pdu": self._links.get(port, {}).get("pdu", []),
            }
            for port, bmc in self._bmcs.items()
        ]
        return {
            "devices": [device.describe() for device in self.devices.values()],
            "machines": machines,
        }

    def saved_state(self) -> dict[int, dict[str, Any]]:
        """Power and boot settings of every machine, for a later `start_fleet(saved=...)`."""
        state = {}
        for port, bmc in self._bmcs.items():
            snapshot = bmc.machine.snapshot()
            state[port] = {key: snapshot[key] for key in SAVED_KEYS}
        return state

    async def close(self) -> None:
        for device in self.devices.values():
            await device.close()
        for transport in self._transports:
            transport.close()
        await asyncio.sleep(0)  # let the transports finish closing their sockets


async def start_fleet(
    count: int,
    base_port: int,
    *,
    host: str = "127.0.0.1",
    user: str = "admin",
    password: str = "password",
    credentials: Mapping[int, Mapping[str, str]] | None = None,
    suites: Iterable[int] = (3, 17),
    timing: Timing | None = None,
    saved: Mapping[int, Mapping[str, Any]] | None = None,
    devices: Sequence[DeviceSpec] = (),
    host_key_dir: Path | None = None,
    names: Mapping[int, str] | None = None,
    faults: Sequence[tuple[str, str, str]] = (),
) -> Fleet:
    """Start `count` BMCs on ports base_port.. (`credentials` maps a port to its own users).

    Then the SSH `devices` wired to them, with the BMCs' default user and password. `names`
    maps a port to its machine's name (default `machine_name(port)`); `faults` holds sensors of
    named machines from the start: (machine, sensor, a reading or a `PsuState`).
    """
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    offered = tuple(suites)
    bmcs: dict[int, Bmc] = {}
    transports: list[asyncio.BaseTransport] = []
    fleet = Fleet(host, bmcs, transports)
    try:
        for port in range(base_port, base_port + count):
            name = (names or {}).get(port) or machine_name(port)
            machine = Machine(timing or Timing(), name=name)
            if saved and port in saved:
                machine.restore(dict(saved[port]))
            for named, sensor, value in faults:
                if named == name:
                    hold(machine, sensor, value)
            users = (credentials or {}).get(port, {user: password})
            guid = uuid.uuid5(GUID_NAMESPACE, f"{host}:{port}").bytes
            bmc = Bmc(machine, users, offered, guid=guid)
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    partial(BmcProtocol, bmc), local_addr=(host, port)
                )
            except OSError as error:  # uvloop keeps the reason (the errno) in the cause
                cause = error.__cause__ if isinstance(error.__cause__, OSError) else error
                reason = cause.strerror or str(cause)
                raise OSError(cause.errno, f"UDP {host}:{port}: {reason}") from error
            bmcs[port] = bmc
            transports.append(transport)
        await fleet.start_devices(devices, {user: password}, host_key_dir)
    except BaseException:
        await fleet.close()
        raise
    return fleet


def hold(machine: Machine, sensor: str, value: str) -> None:
    """Hold one of the machine's sensors at a reading, or a power supply in a state."""
    if value in set(PsuState):
        machine.sensors.set_state(sensor, PsuState(value))
    else:
        machine.sensors.set_value(sensor, float(value))


def machine_name(port: int) -> str:
    """A fleet machine's default name (its firmware hostname, console port label, outlet name)."""
    return f"node{port}"


def raise_fd_limit() -> None:
    """Thousands of sockets need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
