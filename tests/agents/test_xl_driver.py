"""The xl flavour over real SSH to the simulated Xen dom0 (sim/hypervisor.py).

Listing, every power action cross-checked with the host's domains, the config file's boot
order (persistent and one-time), the console, errors, and 200 guests' status on one login.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import asyncssh
import pytest

from agents.drivers.base import AuthFailed, PoweredOff, Refused, Unsupported
from agents.drivers.hosts import Hosts
from agents.drivers.xl import MARKER, XlFlavour
from agents.protocol import (
    BootDevice,
    Dialect,
    GuestPath,
    HostPath,
    Hypervisor,
    PowerAction,
    PowerState,
    SshTarget,
)
from sim.domain import Toolstack
from sim.hypervisor import Hypervisor as SimHost
from sim.hypervisor import parse_cfg
from sim.machine import Timing
from sim.ssh import host_key
from tests.sim.aio import run, until

USER, PASSWORD = "root", "xen-pw"
FAST = Timing(on_delay=0.0, cycle_off=0.05, soft_delay=0.2, post_seconds=0.3)


@dataclass
class Dom0:
    """A simulated dom0 and an xl flavour with its own connection pool."""

    sim: SimHost
    hosts: Hosts
    xl: XlFlavour

    def host(self, secret: str = PASSWORD) -> HostPath:
        target = SshTarget(
            "127.0.0.1", USER, secret, Dialect.SHELL, self.sim.port, self.sim.fingerprint
        )
        return HostPath(target, Hypervisor.XL)

    def path(self, name: str, **host: str) -> GuestPath:
        return GuestPath(self.host(**host), self.sim.guest(name).uuid, name)

    def cfg(self, name: str) -> dict[str, str]:
        return parse_cfg(self.sim.files[f"/etc/xen/{name}.cfg"])

    def restore(self, name: str) -> str | None:
        """The boot order a one-time change left to put back (the marker line's value)."""
        for line in self.sim.files[f"/etc/xen/{name}.cfg"].splitlines():
            if line.startswith(f"{MARKER} = "):
                return line.split('"')[1]
        return None

    def sent(self, since: int) -> list[str]:
        """The xl commands that change something, sent since `since` commands."""
        changing = ("xl create", "xl destroy", "xl shutdown", "xl trigger", "tee")
        return [c for c in self.sim.commands[since:] if c.startswith(changing)]


@asynccontextmanager
async def dom0(dialect: str = "xl", keys: tuple[asyncssh.SSHKey, ...] = ()) -> AsyncIterator[Dom0]:
    """`web` runs (autostart), `db` is off (boot "dc"), `tmp` is off with no uuid line."""
    sim = SimHost("dom0", dialect, {USER: PASSWORD}, host_key("dom0"), authorized_keys=keys,
                  timing=FAST)  # fmt: skip
    stack = Toolstack.XL if "xl" in dialect else Toolstack.LIBVIRT
    sim.add_guest("web", stack, running=True, autostart=True, memory_mib=1024)
    sim.add_guest("db", stack, vcpus=2, memory_mib=2048, boot="dc")
    sim.add_guest("tmp", stack, with_uuid=False)
    await sim.start("127.0.0.1", 0)
    hosts = Hosts()
    try:
        yield Dom0(sim, hosts, XlFlavour(hosts))
    finally:
        await hosts.close()
        await sim.close()


def test_guests_are_the_running_domains_and_the_config_files_with_a_uuid() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            guests = await d.xl.guests(d.host())
            assert [(g.name, g.power, g.vcpus, g.memory_mib, g.autostart) for g in guests] == [
                ("db", PowerState.OFF, 2, 2048, False),
                ("web", PowerState.ON, 1, 1024, True),
            ]
            assert guests[0].state == "shut off"
            assert guests[1].state in ("running", "blocked")
            assert guests[1].uuid == d.sim.guest("web").uuid
            d.sim.run("xl create /etc/xen/tmp.cfg")  # running, so it shows, by its uuid of now
            names = [(g.name, g.uuid) for g in await d.xl.guests(d.host())]
            assert ("tmp", d.sim.guest("tmp").uuid) in names
            assert d.sim.logins == 1

    run(scenario)


def test_status_on_and_off_are_idempotent_and_cross_checked() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            web, db = d.path("web"), d.path("db")
            assert await d.xl.power(web, PowerAction.STATUS) is PowerState.ON
            assert await d.xl.power(db, PowerAction.STATUS) is PowerState.OFF
            mark = len(d.sim.commands)
            assert await d.xl.power(web, PowerAction.ON) is PowerState.ON
            assert await d.xl.power(db, PowerAction.OFF) is PowerState.OFF
            assert d.sent(mark) == []  # already as asked: nothing sent
            assert await d.xl.power(db, PowerAction.ON) is PowerState.ON
            assert d.sent(mark) == ["xl create /etc/xen/db.cfg"]
            assert d.sim.guest("db").domid is not None
            domid = d.sim.guest("web").domid
            assert await d.xl.power(web, PowerAction.OFF) is PowerState.OFF
            assert d.sent(mark)[-1] == f"xl destroy {domid}"
            assert d.sim.guest("web").domid is None
            assert await d.xl.power(web, PowerAction.STATUS) is PowerState.OFF

    run(scenario)


def test_soft_cycle_reset_and_nmi() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            web, machine = d.path("web"), d.sim.guest("web").machine
            first = d.sim.guest("web").domid
            assert await d.xl.power(web, PowerAction.RESET) is PowerState.ON
            assert machine.counters["reset"] == 1
            assert d.sim.guest("web").domid == first
            assert await d.xl.power(web, PowerAction.NMI) is PowerState.ON
            assert machine.counters["diag"] == 1
            boots = len(machine.boot_log)
            assert await d.xl.power(web, PowerAction.CYCLE) is PowerState.ON
            assert d.sim.guest("web").domid not in (None, first)  # destroyed, created anew
            assert len(machine.boot_log) == boots + 1
            assert await d.xl.power(web, PowerAction.SOFT) is PowerState.ON  # the OS is at it
            assert machine.counters["soft"] == 1
            await until(lambda: d.sim.guest("web").domid is None)
            assert await d.xl.power(web, PowerAction.STATUS) is PowerState.OFF
            assert await d.xl.power(web, PowerAction.SOFT) is PowerState.OFF  # off already

    run(scenario)


def test_cycle_reset_and_nmi_of_a_stopped_guest_send_nothing() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            db = d.path("db")
            mark = len(d.sim.commands)
            for action in (PowerAction.CYCLE, PowerAction.RESET):
                with pytest.raises(PoweredOff, match=f"the guest is off; {action} was not sent"):
                    await d.xl.power(db, action)
            with pytest.raises(Refused, match="nmi was not sent"):
                await d.xl.power(db, PowerAction.NMI)
            assert d.sent(mark) == []
            assert d.sim.guest("db").domid is None

    run(scenario)


def test_an_unknown_domain_and_a_domain_without_config_are_refused() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            ghost = replace(d.path("db"), domain="00000000-0000-4000-8000-000000000000")
            for action in (PowerAction.STATUS, PowerAction.ON, PowerAction.OFF):
                with pytest.raises(Refused, match=r"no domain 00000000-.* \(db\); sync the host"):
                    await d.xl.power(ghost, action)
            d.sim.run("xl create /etc/xen/tmp.cfg")
            tmp = d.path("tmp")  # runs with a uuid its config file does not have
            with pytest.raises(Refused, match="cannot create it again; add `uuid = "):
                await d.xl.power(tmp, PowerAction.CYCLE)
            assert d.sim.guest("tmp").domid is not None  # refused before the destroy
            assert await d.xl.power(tmp, PowerAction.OFF) is PowerState.OFF

    run(scenario)


def test_persistent_boot_edits_the_config_file() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            await d.xl.set_boot(d.path("db"), BootDevice.PXE, persistent=True)
            assert d.cfg("db")["boot"] == "ndc"
            assert MARKER not in d.sim.files["/etc/xen/db.cfg"]
            assert d.cfg("db")["uuid"] == d.sim.guest("db").uuid  # the rest is kept
            await d.xl.power(d.path("db"), PowerAction.ON)
            assert d.sim.guest("db").machine.boot_log[-1].device == "pxe"
            await d.xl.power(d.path("db"), PowerAction.CYCLE)
            assert d.sim.guest("db").machine.boot_log[-1].device == "pxe"  # every boot
            assert d.cfg("db")["boot"] == "ndc"

    run(scenario)


def test_a_one_time_boot_device_is_restored_after_our_next_create() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            web = d.path("web")
            await d.xl.set_boot(web, BootDevice.CDROM, persistent=False)
            assert d.cfg("web")["boot"] == "dc"
            assert d.restore("web") == "c"  # the order to put back
            await d.xl.set_boot(web, BootDevice.PXE, persistent=False)  # still restores "c"
            assert d.cfg("web")["boot"] == "nc"
            assert d.restore("web") == "c"
            await d.xl.power(web, PowerAction.RESET)  # a reset keeps the domain's built config
            assert d.sim.guest("web").machine.boot_log[-1].device == "none"
            await d.xl.power(web, PowerAction.CYCLE)
            assert d.sim.guest("web").machine.boot_log[-1].device == "pxe"
            assert d.cfg("web")["boot"] == "c"
            assert MARKER not in d.sim.files["/etc/xen/web.cfg"]
            await d.xl.power(web, PowerAction.CYCLE)
            assert d.sim.guest("web").machine.boot_log[-1].device == "none"  # the disk again

    run(scenario)


def test_default_cancels_a_one_time_change_and_a_config_without_boot_gets_one() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            path = "/etc/xen/db.cfg"
            d.sim.files[path] = d.sim.files[path].replace('boot = "dc"\n', "")
            await d.xl.set_boot(d.path("db"), BootDevice.DISK, persistent=False)
            assert d.cfg("db")["boot"] == "cd"  # xl's default order, the disk first
            await d.xl.set_boot(d.path("db"), BootDevice.DEFAULT, persistent=False)
            assert "boot" not in d.cfg("db")
            assert MARKER not in d.sim.files[path]

    run(scenario)


def test_boot_devices_xl_has_no_setting_for_are_unsupported() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            with pytest.raises(Unsupported, match="firmware setup"):
                await d.xl.set_boot(d.path("web"), BootDevice.BIOS, persistent=False)
            with pytest.raises(Unsupported, match="knows only disk"):
                await d.xl.set_boot(d.path("web"), BootDevice.USB, persistent=True)
            path = "/etc/xen/db.cfg"
            d.sim.files[path] = d.sim.files[path].replace('type = "hvm"', 'type = "pv"')
            with pytest.raises(Unsupported, match="not an HVM guest"):
                await d.xl.set_boot(d.path("db"), BootDevice.PXE, persistent=True)
            assert d.cfg("web")["boot"] == "c"
            assert d.cfg("db")["boot"] == "dc"

    run(scenario)


def test_the_console_carries_the_firmware_and_echoes_input_on_the_shared_connection() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            web = d.path("web")
            console = await d.xl.open_console(web, 80, 25)
            await until(lambda: bool(d.sim.guest("web").consoles))
            assert d.sim.commands[-1] == f"xl console {d.sim.guest('web').domid}"
            await d.xl.power(web, PowerAction.RESET)
            seen = b""
            output = aiter(console)
            async with asyncio.timeout(10):
                while b"web login: " not in seen:
                    seen += await anext(output)
                assert b"Rackhand SimBIOS" in seen
                await console.write(b"root")
                while not seen.endswith(b"root"):
                    seen += await anext(output)
            await console.close()
            await until(lambda: not d.sim.guest("web").consoles)
            assert await d.xl.power(web, PowerAction.STATUS) is PowerState.ON
            assert d.sim.logins == 1  # the console's channel closed, the connection stayed
            with pytest.raises(Refused, match="the guest is off"):
                await d.xl.open_console(d.path("db"), 80, 25)

    run(scenario)


def test_a_guest_renamed_since_the_sync_is_found_by_its_uuid() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            web = d.path("web")
            guest = d.sim.guests.pop("web")
            guest.name = "web-renamed"  # `xl rename`
            d.sim.guests[guest.name] = guest
            assert await d.xl.power(web, PowerAction.STATUS) is PowerState.ON
            assert d.sim.commands[-2:] == ["xl list -l web", "xl list -l"]
            assert await d.xl.power(web, PowerAction.OFF) is PowerState.OFF
            assert guest.domid is None

    run(scenario)


def test_200_guests_status_through_one_login() -> None:
    async def scenario() -> None:
        async with dom0() as d:
            for n in range(200):
                d.sim.add_guest(f"vm{n:03d}", Toolstack.XL, running=n % 2 == 0)
            paths = [d.path(f"vm{n:03d}") for n in range(200)]
            states = await asyncio.gather(*(d.xl.power(path, PowerAction.STATUS) for path in paths))
            assert states == [PowerState.ON, PowerState.OFF] * 100
            assert d.sim.logins == 1

    run(scenario)


def test_a_private_key_logs_in_and_a_wrong_password_does_not() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")

    async def scenario() -> None:
        async with dom0(keys=(key,)) as d:
            pem = key.export_private_key("openssh").decode()
            assert await d.xl.power(d.path("web", secret=pem), PowerAction.STATUS) is PowerState.ON
            with pytest.raises(AuthFailed, match="refused the password for root"):
                await d.xl.guests(d.host(secret="wrong"))

    run(scenario)


def test_a_host_without_xl_is_unsupported() -> None:
    async def scenario() -> None:
        async with dom0("libvirt") as d:
            with pytest.raises(Unsupported, match="not a Xen dom0"):
                await d.xl.guests(d.host())

    run(scenario)
