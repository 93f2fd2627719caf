"""A small demo catalogue for `make run`: two sites, racks, and ~40 devices of every kind
(the hypervisors' guests come from their first sync)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agents.protocol import Dialect, Hypervisor
from app.context import system_context
from app.inventory import devices, paths, racks, sites
from app.inventory.models import Device, DeviceKind, PathKind, SiteKind
from app.inventory.schemas import (
    ConsolePortPath,
    DeviceCreate,
    IpmiPath,
    PduOutletPath,
    RackCreate,
    SiteCreate,
    SshOptions,
    SshPath,
)
from app.vault import Vault

DEMO_PASSWORD = "demo-bmc-password"
FIRST_BMC_PORT = 16230
DEMO_BMCS = 48  # simulated by `rackhand serve --demo`: 16 machines per console server and PDU
FIRST_SSH_PORT = 16300  # the simulated console servers, then the PDUs
# (name, dialect) in the simulator's order: machine i is on box i // 16, port/outlet i % 16 + 1
CONSOLE_BOXES = (
    ("cs-01", Dialect.OPENGEAR),
    ("kvm-01", Dialect.RARITAN_SX),
    ("br12-cs", Dialect.OPENGEAR),
)
PDU_BOXES = (("pdu-a1", Dialect.RARITAN_PX), ("pdu-a2", Dialect.APC), ("br12-pdu", Dialect.APC))
# Simulated hypervisor hosts, after the PDUs: (name, toolstack); their guests come by sync.
HYPERVISORS = (("hv01", Hypervisor.LIBVIRT), ("hv02", Hypervisor.XL))
DEMO_GUESTS = 6  # per hypervisor
# Hardware to look at: a branch server with a failed power supply (critical), a warm inlet on
# db04 (warning); the health poll finds them (docs/health.md).
DEMO_FAULTS = ("br12-srv03:PSU2=failed", "db04:Inlet Temp=39")
GUEST_SYNC_MINUTES = 10
# The machine's own libvirt, when it has one (app/cli/demo_libvirt.py): hv03, behind an sshd.
LOCAL_LIBVIRT_PORT = FIRST_SSH_PORT + 10
LOCAL_GUESTS = ("rackhand-demo-1", "rackhand-demo-2")


@dataclass(frozen=True)
class LocalLibvirt:
    """How the demo's sshd in front of this machine's libvirt is reached."""

    port: int
    private_key: str = field(repr=False)
    host_key: str  # SHA256:…


class DemoServer(NamedTuple):
    """A server of the demo and the simulated machine behind it."""

    name: str
    site: str
    rack: str
    slot: int  # U position
    machine: int  # index in the simulator: BMC port FIRST_BMC_PORT + machine
    console: str  # console box
    pdu: str
    tags: tuple[str, ...]


SERVERS = (
    *(
        DemoServer(f"web{n:02d}", "bj-dc1", "A01", n, n - 1, "cs-01", "pdu-a1", ("web", "prod"))
        for n in range(1, 17)
    ),
    *(
        DemoServer(
            f"db{n:02d}", "bj-dc1", "A02", 2 * n - 1, 15 + n, "kvm-01", "pdu-a2", ("db", "prod")
        )
        for n in range(1, 5)
    ),
    *(
        DemoServer(
            f"br12-srv{n:02d}", "sh-br12", "R1", n, 31 + n, "br12-cs", "br12-pdu", ("branch",)
        )
        for n in range(1, 5)
    ),
)


def demo_fleet_args() -> list[str]:
    """`python -m sim` options that simulate the demo's BMCs, console servers and PDUs.

    Each server's machine carries its name, so its console greets as `web01 login:`.
    """
    names = [""] * DEMO_BMCS
    for server in SERVERS:
        names[server.machine] = server.name
    return [
        "--count", str(DEMO_BMCS), "--base-port", str(FIRST_BMC_PORT), "--names", ",".join(names),
        "--user", "admin", "--password", DEMO_PASSWORD,
        "--console-servers", "3", "--console-ports", "16",
        "--console-dialect", ",".join(dialect for _, dialect in CONSOLE_BOXES),
        "--pdus", "3", "--pdu-outlets", "16",
        "--pdu-dialect", ",".join(dialect for _, dialect in PDU_BOXES),
        "--hypervisors", str(len(HYPERVISORS)), "--hypervisor-guests", str(DEMO_GUESTS),
        "--hypervisor-dialect", ",".join(toolstack for _, toolstack in HYPERVISORS),
        "--ssh-base-port", str(FIRST_SSH_PORT),
        *(option for fault in DEMO_FAULTS for option in ("--fault", fault)),
    ]  # fmt: skip


def _ssh_port(name: str) -> int:
    boxes = [box for box, _ in (*CONSOLE_BOXES, *PDU_BOXES, *HYPERVISORS)]
    return FIRST_SSH_PORT + boxes.index(name)


async def seed_demo(session: AsyncSession, vault: Vault, local: LocalLibvirt | None = None) -> bool:
    """Load the demo fleet into an empty catalogue; leave a non-empty one alone. `local`: the
    machine's own libvirt, as a third hypervisor."""
    if await session.scalar(select(func.count()).select_from(Device)):
        return False
    ctx = system_context("demo fleet for `make run`")
    await sites.create_site(
        session,
        ctx,
        SiteCreate(
            slug="bj-dc1",
            name="Beijing DC 1",
            kind=SiteKind.DATACENTER,
            timezone="Asia/Shanghai",
            address="Jiuxianqiao Rd 10, Beijing",
        ),
    )
    await sites.create_site(
        session,
        ctx,
        SiteCreate(
            slug="sh-br12",
            name="Shanghai branch 12",
            kind=SiteKind.BRANCH,
            timezone="Asia/Shanghai",
        ),
    )
    for site, rack in (("bj-dc1", "A01"), ("bj-dc1", "A02"), ("bj-dc1", "B01"), ("sh-br12", "R1")):
        await racks.create_rack(session, ctx, RackCreate(site=site, name=rack, height_u=42))

    async def add(name: str, kind: DeviceKind, site: str, **fields: object) -> Device:
        await devices.create_device(
            session,
            ctx,
            DeviceCreate.model_validate({"name": name, "kind": kind, "site": site, **fields}),
        )
        return await devices.get_device(session, name)

    async def ssh(
        device: Device,
        address: str,
        dialect: Dialect,
        port: int = 22,
        username: str = "admin",
        secret: str = DEMO_PASSWORD,
        **options: object,
    ) -> None:
        await paths.create_path(
            session,
            ctx,
            vault,
            device,
            SshPath(
                kind=PathKind.SSH,
                address=address,
                port=port,
                username=username,
                secret=secret,
                options=SshOptions.model_validate({"dialect": dialect, **options}),
            ),
        )

    for site, rack, prefix in (("bj-dc1", "A01", "cs-01"), ("sh-br12", "R1", "br12-cs")):
        await ssh(
            await add(
                prefix,
                DeviceKind.CONSOLE_SERVER,
                site,
                rack=rack,
                position_u=42,
                vendor="Opengear",
                model="CM7148",
                tags=["oob"],
            ),
            "127.0.0.1",
            Dialect.OPENGEAR,
            _ssh_port(prefix),
        )
    for site, rack, name, dialect in (
        ("bj-dc1", "A01", "pdu-a1", Dialect.RARITAN_PX),
        ("bj-dc1", "A02", "pdu-a2", Dialect.APC),
        ("sh-br12", "R1", "br12-pdu", Dialect.APC),
    ):
        await ssh(
            await add(
                name,
                DeviceKind.PDU,
                site,
                rack=rack,
                vendor="Raritan" if dialect is Dialect.RARITAN_PX else "APC",
                tags=["power"],
            ),
            "127.0.0.1",
            dialect,
            _ssh_port(name),
        )
    kvm = await add(
        "kvm-01",
        DeviceKind.KVM_SWITCH,
        "bj-dc1",
        rack="A02",
        position_u=42,
        vendor="Raritan",
        model="Dominion SX II",
        tags=["oob"],
    )
    await ssh(kvm, "127.0.0.1", Dialect.RARITAN_SX, _ssh_port("kvm-01"))
    await add(
        "sw-core-01",
        DeviceKind.NETWORK,
        "bj-dc1",
        rack="B01",
        position_u=40,
        vendor="Cisco",
        model="Nexus 9336C",
        os="nxos",
        tags=["core"],
    )
    await add(
        "stor01",
        DeviceKind.STORAGE,
        "bj-dc1",
        rack="B01",
        position_u=30,
        height_u=4,
        vendor="NetApp",
        model="AFF A250",
    )

    for name, site, rack, slot, machine, console, pdu, tags in SERVERS:
        bmc_port = FIRST_BMC_PORT + machine
        wire = machine % 16 + 1  # its console port and PDU outlet
        height = 2 if name.startswith("db") else 1
        device = await add(
            name,
            DeviceKind.SERVER,
            site,
            rack=rack,
            position_u=slot,
            height_u=height,
            vendor="Lenovo",
            model="SR650" if height == 2 else "SR630",
            serial=f"J30{bmc_port:05d}",
            arch="x86_64",
            os="linux",
            os_version="Rocky 9.4",
            tags=list(tags),
        )
        await paths.create_path(
            session,
            ctx,
            vault,
            device,
            IpmiPath(
                kind=PathKind.IPMI,
                address="127.0.0.1",
                port=bmc_port,
                username="admin",
                secret=DEMO_PASSWORD,
            ),
        )
        await paths.create_path(
            session,
            ctx,
            vault,
            device,
            ConsolePortPath(kind=PathKind.CONSOLE_PORT, via=console, port=wire),
        )
        await paths.create_path(
            session,
            ctx,
            vault,
            device,
            PduOutletPath(kind=PathKind.PDU_OUTLET, via=pdu, outlets=[wire]),
        )

    for n, (name, toolstack) in enumerate(HYPERVISORS, 1):
        hypervisor = await add(
            name,
            DeviceKind.HYPERVISOR,
            "bj-dc1",
            rack="B01",
            position_u=10 + 2 * n,
            height_u=2,
            vendor="Dell",
            model="PowerEdge R750",
            arch="x86_64",
            os="linux",
            os_version="Debian 12 / KVM" if toolstack is Hypervisor.LIBVIRT else "Xen 4.17",
            tags=["virt"],
        )
        # Its guests appear with the first periodic sync, soon after the start (`vm` devices).
        await ssh(hypervisor, "127.0.0.1", Dialect.SHELL, _ssh_port(name), hypervisor=toolstack,
                  sync_minutes=GUEST_SYNC_MINUTES)  # fmt: skip
    if local is not None:
        hv03 = await add("hv03", DeviceKind.HYPERVISOR, "bj-dc1", rack="B01", position_u=16,
                         height_u=2, os="linux", os_version="this machine's libvirt",
                         tags=["virt"])  # fmt: skip
        # Synced when asked only: its sync lists every domain of the machine, not only ours.
        await ssh(hv03, "127.0.0.1", Dialect.SHELL, local.port, username="root",
                  secret=local.private_key, hypervisor=Hypervisor.LIBVIRT,
                  host_key=local.host_key)  # fmt: skip
    return True
