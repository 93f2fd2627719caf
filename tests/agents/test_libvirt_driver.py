"""The guest driver against this machine's real libvirt, over a real OpenSSH sshd.

Every action goes through `GuestsDriver` as the runner calls it (a `GuestPath` whose host says
`libvirt`), and `virsh` on the host's side checks what it did: states, domain ids (a cycle is a
new machine, a reset the same one), stored and running definitions, and sshd's own log of
logins. Guests are small, disk-less, and gone after the run (tests/hypervisor_host.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import uuid as uuids
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from agents.drivers import domain_xml
from agents.drivers.base import ConsoleChannel, HostKeyMismatch, PoweredOff, Refused
from agents.drivers.guests import GuestsDriver
from agents.protocol import (
    Answer,
    BootDevice,
    Guest,
    GuestPath,
    GuestsOrder,
    GuestsReport,
    PowerAction,
    PowerOrder,
    PowerState,
    Report,
    SshTarget,
    TaskStatus,
)
from agents.runner import Runner
from tests.hypervisor_host import URI, LibvirtHost, virsh

pytestmark = pytest.mark.xdist_group("libvirt")

T = TypeVar("T")
ON, OFF = PowerState.ON, PowerState.OFF


def run(test: Callable[[GuestsDriver], Awaitable[T]], driver: GuestsDriver | None = None) -> T:
    """Run `test` with a fresh driver (a fresh login), closed after."""

    async def main() -> T:
        used = driver or GuestsDriver()
        try:
            return await test(used)
        finally:
            await used.close()

    return asyncio.run(main())


def domid(uuid: str) -> str:
    """The running machine's id: a new one after every start."""
    return virsh("domid", uuid).stdout.strip()


def marked(xml: str) -> bool:
    """Whether a definition carries a one-time change's mark."""
    return domain_xml.pending(domain_xml.parse(xml))


async def read_until(console: ConsoleChannel, wanted: bytes, within: float = 20.0) -> bytes:
    seen = b""

    async def read() -> None:
        nonlocal seen
        async for chunk in console:
            seen += chunk
            if wanted in seen:
                return

    try:
        await asyncio.wait_for(read(), within)
    except TimeoutError:
        pytest.fail(f"no {wanted!r} on the console within {within:g} s; it showed {seen[-600:]!r}")
    return seen


def test_the_host_is_a_real_libvirt_behind_openssh(libvirt_host: LibvirtHost) -> None:
    """OpenSSH's own client, checking the host key, reaches the same libvirt."""
    uuid = libvirt_host.define("ssh")
    done = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(libvirt_host.key_file), "-p", str(libvirt_host.port),
         "-o", f"UserKnownHostsFile={libvirt_host.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"root@{libvirt_host.address}",
         "virsh", "-c", URI, "list", "--all", "--uuid"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert uuid in done.stdout.split()
    libvirt_host.undefine(uuid)


def test_guests_are_listed_as_the_host_knows_them(libvirt_host: LibvirtHost) -> None:
    running = libvirt_host.define("big", vcpus=2, memory_mib=96, autostart=True, start=True)
    stopped = libvirt_host.define("small")
    guests = {guest.uuid: guest for guest in run(lambda d: d.guests(libvirt_host.host()))}
    names = libvirt_host.domains
    assert guests[running] == Guest(running, names[running], "running", ON, 2, 96, True)
    assert guests[stopped] == Guest(stopped, names[stopped], "shut off", OFF, 1, 64, False)
    listed = set(virsh("list", "--all", "--uuid").stdout.split())
    ours = {uuid for uuid in listed | set(guests) if uuid in libvirt_host.domains}
    assert ours <= set(guests) & listed  # others' domains may come and go meanwhile (a demo)
    libvirt_host.undefine(running)
    libvirt_host.undefine(stopped)


def test_power_actions_as_virsh_sees_them(
    libvirt_host: LibvirtHost, caplog: pytest.LogCaptureFixture
) -> None:
    uuid = libvirt_host.define("power")
    path = libvirt_host.guest(uuid)
    state = libvirt_host.state
    caplog.set_level(logging.INFO, "agents.drivers.libvirt")

    async def steps(driver: GuestsDriver) -> None:
        assert await driver.power(path, PowerAction.STATUS) is OFF
        assert await driver.power(path, PowerAction.ON) is ON
        assert state(uuid) == "running"
        first = domid(uuid)
        caplog.clear()
        assert await driver.power(path, PowerAction.ON) is ON
        assert "is running already: nothing sent" in caplog.text
        assert domid(uuid) == first
        assert await driver.power(path, PowerAction.STATUS) is ON
        assert await driver.power(path, PowerAction.RESET) is ON
        assert (state(uuid), domid(uuid)) == ("running", first)  # the same machine, reset
        assert await driver.power(path, PowerAction.NMI) is ON
        assert await driver.power(path, PowerAction.CYCLE) is ON
        assert state(uuid) == "running"
        assert domid(uuid) != first  # destroyed and started: a new machine
        assert await driver.power(path, PowerAction.SOFT) is ON  # asked; firmware ignores it
        assert state(uuid) in ("running", "in shutdown", "shut off")
        assert await driver.power(path, PowerAction.OFF) is OFF
        assert state(uuid) == "shut off"
        caplog.clear()
        assert await driver.power(path, PowerAction.OFF) is OFF
        assert "is shut off already: nothing sent" in caplog.text
        assert await driver.power(path, PowerAction.SOFT) is OFF
        for action in (PowerAction.CYCLE, PowerAction.RESET):
            with pytest.raises(PoweredOff, match=f"is shut off, so no {action} was sent"):
                await driver.power(path, action)
            assert state(uuid) == "shut off"
        with pytest.raises(Refused, match="so no nmi was sent"):
            await driver.power(path, PowerAction.NMI)

    run(steps)
    libvirt_host.undefine(uuid)


def test_one_time_pxe_is_restored_once_the_guest_ran(libvirt_host: LibvirtHost) -> None:
    uuid = libvirt_host.define("pxe")
    path = libvirt_host.guest(uuid)

    async def steps(driver: GuestsDriver) -> None:
        await driver.set_boot(path, BootDevice.PXE, persistent=False)
        stored = libvirt_host.xml(uuid)
        assert "<boot dev='network'/>" in stored
        assert "<boot dev='hd'/>" not in stored
        assert marked(stored)
        assert await driver.power(path, PowerAction.STATUS) is OFF  # not run yet: kept
        assert marked(libvirt_host.xml(uuid))
        assert await driver.power(path, PowerAction.ON) is ON
        assert "<boot dev='network'/>" in libvirt_host.xml(uuid, inactive=False)
        assert await driver.power(path, PowerAction.STATUS) is ON  # it ran: restored
        stored = libvirt_host.xml(uuid)
        assert "<boot dev='hd'/>" in stored
        assert "network" not in stored
        assert not marked(stored)
        assert not marked(libvirt_host.xml(uuid, inactive=False))

    run(steps)
    libvirt_host.undefine(uuid)


def test_a_reset_applies_a_pending_boot_change_by_starting_afresh(
    libvirt_host: LibvirtHost,
) -> None:
    """A change made while the guest runs waits for a start; a reset then is one."""
    uuid = libvirt_host.define("reset", start=True)
    path = libvirt_host.guest(uuid)
    first = domid(uuid)

    async def steps(driver: GuestsDriver) -> None:
        await driver.set_boot(path, BootDevice.PXE, persistent=False)
        assert await driver.power(path, PowerAction.STATUS) is ON  # still the old boot
        assert marked(libvirt_host.xml(uuid))
        assert not marked(libvirt_host.xml(uuid, inactive=False))
        assert await driver.power(path, PowerAction.RESET) is ON
        assert domid(uuid) != first
        assert "<boot dev='network'/>" in libvirt_host.xml(uuid, inactive=False)
        assert await driver.power(path, PowerAction.STATUS) is ON
        assert "<boot dev='hd'/>" in libvirt_host.xml(uuid)
        assert not marked(libvirt_host.xml(uuid))

    run(steps)
    libvirt_host.undefine(uuid)


def test_a_persistent_device_stays_and_outlives_a_one_time_one(
    libvirt_host: LibvirtHost,
) -> None:
    uuid = libvirt_host.define("persistent")
    path = libvirt_host.guest(uuid)

    async def steps(driver: GuestsDriver) -> None:
        await driver.set_boot(path, BootDevice.CDROM, persistent=True)
        assert await driver.power(path, PowerAction.ON) is ON
        assert await driver.power(path, PowerAction.STATUS) is ON
        stored = libvirt_host.xml(uuid)
        assert "<boot dev='cdrom'/>" in stored
        assert not marked(stored)
        await driver.set_boot(path, BootDevice.PXE, persistent=False)
        assert await driver.power(path, PowerAction.CYCLE) is ON
        assert "<boot dev='network'/>" in libvirt_host.xml(uuid, inactive=False)
        assert await driver.power(path, PowerAction.STATUS) is ON
        stored = libvirt_host.xml(uuid)
        assert "<boot dev='cdrom'/>" in stored
        assert "network" not in stored

    run(steps)
    libvirt_host.undefine(uuid)


def test_bios_offers_the_boot_menu_on_the_console(libvirt_host: LibvirtHost) -> None:
    """The console carries the firmware's own text after a reset, and the menu's offer."""
    uuid = libvirt_host.define("bios")
    path = libvirt_host.guest(uuid)

    async def steps(driver: GuestsDriver) -> None:
        await driver.set_boot(path, BootDevice.BIOS, persistent=True)
        assert "<bootmenu enable='yes' timeout='10000'/>" in libvirt_host.xml(uuid)
        assert await driver.power(path, PowerAction.ON) is ON
        console = await driver.open_console(path, cols=80, rows=25)
        try:
            assert await driver.power(path, PowerAction.RESET) is ON
            seen = await read_until(console, b"Press ESC for boot menu")
        finally:
            await console.close()
        assert b"SeaBIOS" in seen
        assert b"Escape character" not in seen  # virsh's banner is the driver's, not shown
        await driver.set_boot(path, BootDevice.DISK, persistent=True)
        stored = libvirt_host.xml(uuid)
        assert "bootmenu" not in stored
        assert "<boot dev='hd'/>" in stored

    run(steps)
    libvirt_host.undefine(uuid)


def test_a_console_is_refused_when_there_is_none(libvirt_host: LibvirtHost) -> None:
    stopped = libvirt_host.define("console-off")
    bare = libvirt_host.define("console-none", serial=False, start=True)

    async def steps(driver: GuestsDriver) -> None:
        with pytest.raises(Refused, match="is not running, so it has no console; power it on"):
            await driver.open_console(libvirt_host.guest(stopped), cols=80, rows=25)
        with pytest.raises(Refused, match="has no serial console"):
            await driver.open_console(libvirt_host.guest(bare), cols=80, rows=25)
        ghost = GuestPath(libvirt_host.host(), str(uuids.uuid4()), "ghost")
        with pytest.raises(Refused, match=r"no domain .* \(ghost\); sync the host"):
            await driver.open_console(ghost, cols=80, rows=25)

    run(steps)
    libvirt_host.undefine(stopped)
    libvirt_host.undefine(bare)


def test_a_poll_of_many_guests_logs_in_once(libvirt_host: LibvirtHost) -> None:
    """More commands at once than sshd's MaxSessions (10), on one connection."""
    uuids_ = [libvirt_host.define(f"poll-{n}") for n in range(24)]
    before = libvirt_host.logins()

    async def poll(driver: GuestsDriver) -> list[PowerState]:
        states = asyncio.gather(
            *(driver.power(libvirt_host.guest(u), PowerAction.STATUS) for u in uuids_)
        )
        listed, polled = await asyncio.gather(driver.guests(libvirt_host.host()), states)
        assert set(uuids_) <= {guest.uuid for guest in listed}
        return polled

    assert run(poll) == [OFF] * len(uuids_)
    assert libvirt_host.logins() - before == 1
    for u in uuids_:
        libvirt_host.undefine(u)


def test_an_unknown_domain_is_refused_saying_so(libvirt_host: LibvirtHost) -> None:
    ghost = GuestPath(libvirt_host.host(), str(uuids.uuid4()), "ghost")
    message = f"hypervisor {libvirt_host.address}:{libvirt_host.port}: no domain {ghost.domain} "
    message += "(ghost); sync the host"

    async def steps(driver: GuestsDriver) -> None:
        for action in (PowerAction.STATUS, PowerAction.ON):
            with pytest.raises(Refused) as caught:
                await driver.power(ghost, action)
            assert str(caught.value) == message
        with pytest.raises(Refused, match="sync the host"):
            await driver.set_boot(ghost, BootDevice.PXE, persistent=False)
        named = GuestPath(libvirt_host.host(), "--all", "ghost")  # never an option to virsh
        with pytest.raises(Refused, match="the guest's domain '--all' is not a UUID; sync"):
            await driver.power(named, PowerAction.STATUS)

    run(steps)


def test_a_wrong_host_key_runs_nothing(libvirt_host: LibvirtHost) -> None:
    uuid = libvirt_host.define("pinned")
    before = libvirt_host.logins()
    wrong = "SHA256:" + "A" * 43
    shown = re.escape(f"pinned {wrong}, shown {libvirt_host.host_key}; nothing was sent")
    with pytest.raises(HostKeyMismatch, match=shown):
        run(lambda d: d.power(libvirt_host.guest(uuid, host_key=wrong), PowerAction.ON))
    assert libvirt_host.logins() == before
    assert libvirt_host.state(uuid) == "shut off"
    libvirt_host.undefine(uuid)


def test_an_unpinned_host_key_is_reported(libvirt_host: LibvirtHost) -> None:
    seen: list[tuple[SshTarget, str]] = []
    driver = GuestsDriver(on_host_key=lambda target, key: seen.append((target, key)))
    run(lambda d: d.guests(libvirt_host.host(pinned=False)), driver)
    assert [key for _, key in seen] == [libvirt_host.host_key]


def test_the_runner_drives_guests_through_the_driver(libvirt_host: LibvirtHost) -> None:
    """As the agent does: a cycle of an off guest powers it on; a guest sync lists it."""
    uuid = libvirt_host.define("runner")
    finals: dict[str, Report | Answer] = {}

    async def main() -> None:
        done = asyncio.Event()

        async def sink(report: Report | Answer) -> None:
            if report.status is not TaskStatus.RUNNING:
                finals[report.task_id] = report
                if len(finals) == 2:
                    done.set()

        driver = GuestsDriver()
        runner = Runner({"libvirt": driver}, sink, sink)
        path = libvirt_host.guest(uuid)
        runner.submit(PowerOrder("cycle", "vm", "bj", PowerAction.CYCLE, (path,)))
        runner.submit(GuestsOrder("sync", "hv", "bj", libvirt_host.host()))
        try:
            await asyncio.wait_for(done.wait(), 60)
        finally:
            await runner.close()
            await driver.close()

    asyncio.run(main())
    cycled, synced = finals["cycle"], finals["sync"]
    assert isinstance(cycled, Report)
    assert (cycled.status, cycled.power_state) == (TaskStatus.SUCCEEDED, ON)
    assert "the machine was off, so cycle powered it on" in cycled.message
    assert libvirt_host.state(uuid) == "running"
    assert isinstance(synced, GuestsReport)
    assert synced.status is TaskStatus.SUCCEEDED
    assert uuid in {guest.uuid for guest in synced.guests}
    libvirt_host.undefine(uuid)
