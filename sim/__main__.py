"""`python -m sim`: a fleet of simulated IPMI BMCs on consecutive UDP ports until SIGTERM.

Each serves its machine's sensors, event log and FRU inventory besides power, boot and SOL.

Optionally with SSH console servers and switched PDUs wired to the machines in order, and
hypervisor hosts (Xen's xl, libvirt's virsh) with guests of their own.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from sim.console_server import Dialect
from sim.domain import toolstacks
from sim.fleet import (
    CONSOLE_SERVER,
    PDU,
    DeviceSpec,
    plan_devices,
    plan_hypervisors,
    wiring_unit,
)
from sim.machine import Timing
from sim.pdu import CYCLE_DELAY, PduDialect
from sim.run import Saved, run, split
from sim.sensors import BY_NAME, PsuState

E = TypeVar("E", bound=StrEnum)
HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--base-port", type=int, default=16230)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="password")
    parser.add_argument(
        "--credentials", type=Path, help='JSON file {"PORT": {"USER": "PASSWORD"}} for some BMCs'
    )
    parser.add_argument("--suites", default="3,17", help="cipher suites offered, e.g. 3 or 3,17")
    parser.add_argument("--control-port", type=int, help="JSON-lines control channel (0: any)")
    parser.add_argument("--state", type=Path, help="load power/boot state from and save it to")
    parser.add_argument("--on-delay", type=float, default=Timing.on_delay)
    parser.add_argument("--cycle-off", type=float, default=Timing.cycle_off)
    parser.add_argument("--soft-delay", type=float, default=Timing.soft_delay)
    parser.add_argument(
        "--post-seconds", type=float, default=Timing.post_seconds, help="how long POST shows"
    )
    parser.add_argument(
        "--names",
        type=_names,
        default=[],
        help="machine names in port order, comma-separated: the hostname their consoles show, "
        "their console port labels and outlet names (an empty or missing one: node<PORT>)",
    )
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="MACHINE:SENSOR=VALUE",
        help="from the start, hold a sensor of a named machine at a reading (e.g. 'db04:Inlet "
        "Temp=39') or a power supply in a state ('br12-srv03:PSU2=failed'); repeatable",
    )
    parser.add_argument("--verbose", action="store_true", help="log dropped packets")
    parser.add_argument(
        "--wiring",
        action="store_true",
        help="print a `wiring: {json}` line for programs: the SSH devices with their credentials "
        "and host keys, and what each machine is wired to",
    )
    parser.add_argument(
        "--stop-with-stdin",
        action="store_true",
        help="also stop when standard input closes (a pipe from the process that started us)",
    )
    ssh = parser.add_argument_group(
        "SSH devices",
        "machine i is on console server i // P, port i % P + 1 (PDUs likewise); hypervisor hosts "
        "hv1, hv2… have G guests each (hv1-vm01…, stable uuids, the first half running)",
    )
    ssh.add_argument("--console-servers", type=int, default=0, metavar="N")
    ssh.add_argument("--console-ports", type=int, default=16, metavar="P")
    ssh.add_argument(
        "--console-dialect",
        type=_dialects(Dialect),
        help=f"one of {', '.join(Dialect)}, or a comma list taken in turn (default: all in turn)",
    )
    ssh.add_argument("--pdus", type=int, default=0, metavar="N")
    ssh.add_argument("--pdu-outlets", type=int, default=8, metavar="O")
    ssh.add_argument(
        "--pdu-dialect",
        type=_dialects(PduDialect),
        help=f"one of {', '.join(PduDialect)}, or a comma list taken in turn (default: all)",
    )
    ssh.add_argument("--pdu-cycle-delay", type=float, default=CYCLE_DELAY, metavar="SECONDS")
    ssh.add_argument("--hypervisors", type=int, default=0, metavar="N")
    ssh.add_argument("--hypervisor-guests", type=int, default=6, metavar="G")
    ssh.add_argument(
        "--hypervisor-dialect",
        type=_hypervisor_dialects,
        default=["xl+libvirt"],
        help="xl, libvirt or xl+libvirt (both), or a comma list taken in turn (default: both)",
    )
    ssh.add_argument(
        "--authorized-key",
        type=Path,
        action="append",
        default=[],
        help="an OpenSSH public key file the hypervisors accept for the user (repeatable)",
    )
    ssh.add_argument(
        "--ssh-base-port",
        type=int,
        default=0,
        help="console servers, then PDUs, then hypervisors (0: any free)",
    )
    ssh.add_argument("--host-key-dir", type=Path, help="keep host keys here (stable fingerprints)")
    args = parser.parse_args(argv)
    if args.count < 1 or not 1 <= args.processes <= args.count:
        parser.error("need --count >= 1 and 1 <= --processes <= --count")
    if args.base_port < 1 or args.base_port + args.count > 65536:
        parser.error("the ports must lie within 1-65535")
    for _, sensor, value in args.fault:
        if sensor not in BY_NAME:
            parser.error(f"--fault: no sensor {sensor!r}; known: {', '.join(BY_NAME)}")
        if value not in set(PsuState):
            try:
                float(value)
            except ValueError:
                parser.error(f"--fault: {value!r} is neither a reading nor one of "
                             f"{', '.join(PsuState)}")  # fmt: skip
    named = [name for name in args.names if name]
    if len(args.names) > args.count or len(set(named)) < len(named):
        parser.error("need at most --count names, each used once")
    if min(args.console_servers, args.pdus) < 0 or min(args.console_ports, args.pdu_outlets) < 1:
        parser.error("need --console-servers, --pdus >= 0 and --console-ports, --pdu-outlets >= 1")
    if args.hypervisors < 0 or args.hypervisor_guests < 0:
        parser.error("need --hypervisors, --hypervisor-guests >= 0")
    devices = args.console_servers + args.pdus + args.hypervisors
    if args.ssh_base_port and not 1 <= args.ssh_base_port <= 65536 - devices:
        parser.error("the SSH ports must lie within 1-65535")
    try:
        ports = range(args.base_port, args.base_port + args.count)
        split(ports, args.processes, wiring_unit(ssh_devices(args)))
    except ValueError as error:
        parser.error(f"{error}: use fewer --processes")
    return args


def _dialects(kind: type[E]) -> Callable[[str], list[E]]:
    def parse(text: str) -> list[E]:
        try:
            return [kind(name.strip()) for name in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: use {', '.join(kind)} or a comma list of them"
            ) from None

    return parse


def _hypervisor_dialects(text: str) -> list[str]:
    dialects = [name.strip() for name in text.split(",")]
    try:
        for dialect in dialects:
            toolstacks(dialect)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use xl, libvirt or xl+libvirt, or a comma list of them"
        ) from None
    return dialects


def _fault(text: str) -> tuple[str, str, str]:
    machine, colon, rest = text.partition(":")
    sensor, equals, value = rest.partition("=")
    if not (colon and equals and machine and sensor and value):
        raise argparse.ArgumentTypeError(f"{text!r}: give MACHINE:SENSOR=VALUE")
    return machine, sensor, value


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(HOSTNAME.fullmatch(name) for name in names if name):
        raise argparse.ArgumentTypeError(f"{text!r}: names of letters, digits, '.', '-', '_'")
    return names


def ssh_devices(args: argparse.Namespace) -> list[DeviceSpec]:
    """The console servers then the PDUs asked for, wired to the machines in order; then the
    hypervisor hosts."""
    ports = range(args.base_port, args.base_port + args.count)
    consoles = args.console_dialect or list(Dialect)
    pdus = args.pdu_dialect or list(PduDialect)
    pdu_port = args.ssh_base_port + args.console_servers if args.ssh_base_port else 0
    hypervisor_port = pdu_port + args.pdus if args.ssh_base_port else 0
    keys = [path.read_text().strip() for path in args.authorized_key]
    return [
        *plan_devices(
            ports,
            CONSOLE_SERVER,
            args.console_servers,
            args.console_ports,
            consoles,
            args.ssh_base_port,
        ),
        *plan_devices(
            ports, PDU, args.pdus, args.pdu_outlets, pdus, pdu_port, args.pdu_cycle_delay
        ),
        *plan_hypervisors(
            args.hypervisors, args.hypervisor_guests, args.hypervisor_dialect, hypervisor_port, keys
        ),
    ]


def fleet_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of `start_fleet` (picklable, for child processes)."""
    ports = range(args.base_port, args.base_port + args.count)
    credentials = {}
    if args.credentials:
        credentials = {
            int(port): users for port, users in json.loads(args.credentials.read_text()).items()
        }
    return {
        "host": args.host,
        "user": args.user,
        "password": args.password,
        "credentials": credentials,
        "suites": tuple(int(suite) for suite in args.suites.split(",")),
        "timing": Timing(args.on_delay, args.cycle_off, args.soft_delay, args.post_seconds),
        "devices": ssh_devices(args),
        "host_key_dir": args.host_key_dir,
        "names": {port: name for port, name in zip(ports, args.names, strict=False) if name},
        "faults": tuple(args.fault),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    settings = fleet_settings(args)
    saved: Saved = {}
    if args.state and args.state.exists():
        saved = {int(port): value for port, value in json.loads(args.state.read_text()).items()}
    ports = range(args.base_port, args.base_port + args.count)
    watched = (sys.stdin.fileno(),) if args.stop_with_stdin else ()
    try:
        state = run(
            ports,
            args.processes,
            settings,
            args.control_port,
            saved,
            full_wiring=args.wiring,
            watched=watched,
        )
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.state:
        args.state.write_text(json.dumps({**saved, **state}, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
