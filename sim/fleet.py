"""Many BMCs in one event loop, one UDP port each: the in-process fleet."""

from __future__ import annotations

import asyncio
import resource
import uuid
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from sim.ipmi import Bmc, BmcProtocol
from sim.machine import Machine, Timing

GUID_NAMESPACE = uuid.UUID("5d1b1c9e-4c1e-4f57-9a55-7b0c2f0e6a11")
SAVED_KEYS = ("power", "boot_device", "boot_persistent", "boot_efi")


class Fleet:
    """Running BMCs by port; `close()` releases their ports."""

    def __init__(self, host: str, bmcs: dict[int, Bmc], transports: list[asyncio.BaseTransport]):
        self.host = host
        self._bmcs = bmcs
        self._transports = transports

    @property
    def ports(self) -> list[int]:
        return list(self._bmcs)

    def bmc(self, port: int) -> Bmc:
        """The BMC on a port (KeyError if the fleet has none there)."""
        return self._bmcs[port]

    def machine(self, port: int) -> Machine:
        return self._bmcs[port].machine

    def saved_state(self) -> dict[int, dict[str, Any]]:
        """Power and boot settings of every machine, for a later `start_fleet(saved=...)`."""
        state = {}
        for port, bmc in self._bmcs.items():
            snapshot = bmc.machine.snapshot()
            state[port] = {key: snapshot[key] for key in SAVED_KEYS}
        return state

    async def close(self) -> None:
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
) -> Fleet:
    """Start `count` BMCs on ports base_port.. (`credentials` maps a port to its own users)."""
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    offered = tuple(suites)
    bmcs: dict[int, Bmc] = {}
    transports: list[asyncio.BaseTransport] = []
    try:
        for port in range(base_port, base_port + count):
            machine = Machine(timing or Timing())
            if saved and port in saved:
                machine.restore(dict(saved[port]))
            users = (credentials or {}).get(port, {user: password})
            guid = uuid.uuid5(GUID_NAMESPACE, f"{host}:{port}").bytes
            bmc = Bmc(machine, users, offered, guid=guid)
            transport, _ = await loop.create_datagram_endpoint(
                partial(BmcProtocol, bmc), local_addr=(host, port)
            )
            bmcs[port] = bmc
            transports.append(transport)
    except BaseException:
        await Fleet(host, bmcs, transports).close()
        raise
    return Fleet(host, bmcs, transports)


def raise_fd_limit() -> None:
    """Thousands of sockets need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
