"""Guests of a libvirt host (KVM/QEMU, or Xen through libxl) driven by `virsh` over the host's
shared SSH connection (docs/hypervisors.md, "libvirt").

Domains are named by UUID (a name can change, a UUID cannot). Every power action reads the
domain's state first, so `on` and `off` send nothing when it already is so, and a cycle or
reset of a guest that is off is refused before anything is sent. A boot change is made in the
stored definition, which libvirt applies at the next start; a one-time one is restored by the
first power action (or boot change) that finds the guest running on it: by then it has booted
from it once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from xml.etree.ElementTree import Element

from agents.drivers import domain_xml
from agents.drivers.base import (
    ConsoleChannel,
    DeviceTimeout,
    DriverError,
    PoweredOff,
    Refused,
    Unsupported,
)
from agents.drivers.hosts import HostConsole, Hosts, Output
from agents.protocol import BootDevice, Guest, GuestPath, HostPath, PowerAction, PowerState

log = logging.getLogger(__name__)

# `virsh domstate` words, by the number `domstats` gives (virDomainState).
STATES = ("no state", "running", "idle", "paused", "in shutdown", "shut off", "crashed",
          "pmsuspended")  # fmt: skip
_ON = frozenset({"running", "idle", "blocked", "paused", "in shutdown", "pmsuspended"})
_OFF = frozenset({"shut off", "crashed"})

_ACTIONS = {
    PowerAction.OFF: "destroy",  # hard, like a BMC's power off
    PowerAction.SOFT: "shutdown",  # ACPI: the guest OS decides
    PowerAction.RESET: "reset",
    PowerAction.NMI: "inject-nmi",
}
# Actions that send nothing to a guest already in this state.
_ALREADY = {
    PowerAction.ON: PowerState.ON,
    PowerAction.OFF: PowerState.OFF,
    PowerAction.SOFT: PowerState.OFF,
}

# virsh's words for a domain it does not know (9.x, then older releases).
_NO_DOMAIN = re.compile(r"failed to get domain|Domain not found|no domain with matching")
_NOT_RUNNING = re.compile(r"not running|is not active")
_NO_CONSOLE = re.compile(r"cannot find character device|no console|not using a PTY")
_BANNER = re.compile(rb"Escape character is \^\][^\n]*\n")


def power_of(state: str) -> PowerState:
    """What a `virsh domstate` word means for power (paused and suspended guests are on)."""
    if state in _ON:
        return PowerState.ON
    if state in _OFF:
        return PowerState.OFF
    return PowerState.UNKNOWN


class LibvirtFlavour:
    """`Flavour` for libvirt hosts. `settle` is how long a fresh console is watched for
    virsh's refusal after its banner (an idle serial line says nothing)."""

    def __init__(self, hosts: Hosts, *, settle: float = 0.5, attach: float = 10.0) -> None:
        self._hosts = hosts
        self._settle = settle
        self._attach = attach
        # One edit of a guest's definition at a time (read, change, define), per guest.
        self._editing: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def guests(self, host: HostPath) -> list[Guest]:
        """Every domain, running or defined: three commands at once on the one connection,
        whatever the number of guests (names and UUIDs, the autostarted, their stats)."""
        listed, autostarted, stats = await asyncio.gather(
            self._virsh(host, "list", "--all", "--uuid", "--name"),
            self._virsh(host, "list", "--all", "--autostart", "--uuid"),
            self._virsh(host, "domstats", "--state", "--vcpu", "--balloon"),
        )
        for out in (listed, autostarted, stats):
            self._check(host, out, "list its domains")
        auto = set(autostarted.stdout.split())
        by_name = _domstats(stats.stdout)
        guests = []
        for line in listed.stdout.splitlines():
            uuid, _, name = line.strip().partition(" ")
            if not uuid:
                continue
            fields = by_name.get(name, {})
            state = _word(fields.get("state.state", ""))
            guests.append(
                Guest(
                    uuid=uuid,
                    name=name,
                    state=state,
                    power=power_of(state),
                    vcpus=_int(fields.get("vcpu.current")),
                    memory_mib=_int(fields.get("balloon.maximum")) // 1024,
                    autostart=uuid in auto,
                )
            )
        return guests

    async def power(self, path: GuestPath, action: PowerAction) -> PowerState:
        state = await self._state(path)
        power = power_of(state)
        if power is PowerState.ON:
            await self._restore_if_booted(path)
        if action is PowerAction.STATUS:
            return power
        if _ALREADY.get(action) is power:
            log.info("%s is %s already: nothing sent", _guest(path), state)
            return power
        if power is PowerState.OFF and action is not PowerAction.ON:
            said = f"hypervisor {path.host.endpoint}: {_guest(path)} is {state}, so no {action} "
            if action is PowerAction.NMI:
                raise Refused(said + "was sent (an NMI is for a running guest)")
            raise PoweredOff(said + "was sent")  # the runner powers it on instead
        if action is PowerAction.ON:
            await self._act(path, "start")
            return PowerState.ON
        if action is PowerAction.RESET and await self._boot_pending(path):
            log.info("%s: boot change pending, so reset = destroy + start", _guest(path))
            action = PowerAction.CYCLE
        if action is PowerAction.CYCLE:
            await self._act(path, "destroy")
            await self._act(path, "start")
            return PowerState.ON
        await self._act(path, _ACTIONS[action])
        if action is PowerAction.OFF:
            return PowerState.OFF
        return power_of(await self._state(path))

    async def set_boot(self, path: GuestPath, device: BootDevice, persistent: bool) -> None:
        """Edit the stored definition: it applies at the guest's next start (`on`, `cycle`, or
        a `reset`, which then starts it afresh: docs/hypervisors.md)."""
        if device is BootDevice.USB:
            raise Unsupported(
                f"hypervisor {path.host.endpoint}: libvirt has no USB boot device; give the "
                "USB device a boot order in the guest's definition instead"
            )
        async with self._editing[path.endpoint]:
            await self._restore(path)
            domain = await self._definition(path)
            domain_xml.set_boot(domain, device, persistent)
            await self._define(path, domain)

    async def open_console(self, path: GuestPath, cols: int, rows: int) -> ConsoleChannel:
        """`virsh console --force` (it takes the console from any other session), on a PTY
        of the viewer's size; its banner is read here and never shown."""
        argv = ["virsh", "-c", path.host.uri, "console", "--force", path.domain]
        console = await self._hosts.console(path.host, argv, cols=cols, rows=rows)
        try:
            console.pending = await self._attached(path, console)
        except BaseException:
            await console.close()
            raise
        return console

    async def _attached(self, path: GuestPath, console: HostConsole) -> bytes:
        """The console's first bytes, once past virsh's banner and its possible refusal."""
        seen = b""
        try:
            async with asyncio.timeout(self._attach):
                while (banner := _BANNER.search(seen)) is None:
                    chunk = await console.read()
                    if chunk is None:
                        raise self._console_refused(path, seen)
                    seen += chunk
        except TimeoutError:
            raise DeviceTimeout(
                f"hypervisor {path.host.endpoint}: `virsh console` did not attach to "
                f"{_guest(path)} within {self._attach:g} s"
            ) from None
        seen = seen[banner.end() :]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settle
        while _maybe_error(seen):
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await console.read()
            except TimeoutError:
                break
            if chunk is None:
                raise self._console_refused(path, seen)
            seen += chunk
        return seen

    def _console_refused(self, path: GuestPath, seen: bytes) -> DriverError:
        said = _errors(seen.decode("utf-8", "replace")) or "it closed at once"
        where = f"hypervisor {path.host.endpoint}"
        if _NO_DOMAIN.search(said):
            return _no_domain(path)
        if _NOT_RUNNING.search(said):
            return Refused(
                f"{where}: {_guest(path)} is not running, so it has no console; power it on"
            )
        if _NO_CONSOLE.search(said):
            return Refused(
                f"{where}: {_guest(path)} has no serial console (virsh: {said}); give it a "
                "<serial type='pty'> and a <console type='pty'> in its definition"
            )
        return Refused(f"{where}: `virsh console` for {_guest(path)} failed: {said}")

    async def _state(self, path: GuestPath) -> str:
        """The domain's state word ("running", "shut off"…), without virsh's reason."""
        out = await self._virsh(path.host, "domstate", "--reason", path.domain)
        self._check(path.host, out, f"read the state of {_guest(path)}", path)
        return out.stdout.strip().partition(" (")[0]

    async def _act(self, path: GuestPath, command: str) -> None:
        out = await self._virsh(path.host, command, path.domain)
        self._check(path.host, out, f"{command} {_guest(path)}", path)

    async def _restore_if_booted(self, path: GuestPath) -> None:
        async with self._editing[path.endpoint]:
            await self._restore(path)

    async def _restore(self, path: GuestPath) -> None:
        """Put a one-time boot change back once the guest runs on it: the running machine's
        own definition (`--live`) then carries the change's mark."""
        live = await self._virsh(path.host, "metadata", "--live", path.domain, domain_xml.NS)
        if live.status != 0:
            return  # no mark (or not running): nothing booted from a one-time change
        domain = await self._definition(path)
        if domain_xml.restore(domain):
            await self._define(path, domain)
            log.info("%s booted once from its one-time device: boot order restored", _guest(path))
        removed = await self._virsh(
            path.host, "metadata", "--live", "--remove", path.domain, domain_xml.NS
        )
        self._check(path.host, removed, f"clear the boot mark of running {_guest(path)}", path)

    async def _boot_pending(self, path: GuestPath) -> bool:
        """Whether the stored definition boots otherwise than the running machine: a reset
        restarts the running machine as it is, so only a start would apply the change."""
        running, stored = await asyncio.gather(
            self._definition(path, live=True), self._definition(path)
        )
        return domain_xml.boot_settings(running) != domain_xml.boot_settings(stored)

    async def _definition(self, path: GuestPath, *, live: bool = False) -> Element:
        """The domain's XML. The stored one is read with `--security-info`: it is defined
        again after an edit, and without it virsh leaves out the VNC/SPICE passwords, which
        the new definition would then drop (the XML is never put in a message)."""
        which = () if live else ("--inactive", "--security-info")
        out = await self._virsh(path.host, "dumpxml", *which, path.domain)
        self._check(path.host, out, f"read the definition of {_guest(path)}", path)
        try:
            return domain_xml.parse(out.stdout)
        except domain_xml.DomainXmlError as exc:
            raise Refused(f"hypervisor {path.host.endpoint}: {_guest(path)}: {exc}") from exc

    async def _define(self, path: GuestPath, domain: Element) -> None:
        """Store the edited definition, sent on the command's input (no file on the host)."""
        xml = domain_xml.serialize(domain)
        out = await self._virsh(path.host, "define", "/dev/stdin", stdin=xml)
        self._check(path.host, out, f"define {_guest(path)} with its new boot settings", path)

    async def _virsh(self, host: HostPath, *args: str, stdin: str | None = None) -> Output:
        return await self._hosts.run(host, ["virsh", "-c", host.uri, *args], stdin=stdin)

    def _check(
        self, host: HostPath, out: Output, doing: str, path: GuestPath | None = None
    ) -> None:
        """Raise what a failed virsh command means, in its own words."""
        if out.status == 0:
            return
        where = f"hypervisor {host.endpoint}"
        if out.status == 127:
            raise Unsupported(
                f"{where} has no virsh (exit status 127); install libvirt-clients there, or "
                "set the host's ssh path option hypervisor to xl if it runs Xen without libvirt"
            )
        said = _errors(out.stderr) or out.said
        if path is not None and _NO_DOMAIN.search(said):
            raise _no_domain(path)
        raise Refused(f"{where}: virsh could not {doing}: {said}")


def _no_domain(path: GuestPath) -> Refused:
    return Refused(
        f"hypervisor {path.host.endpoint}: no domain {path.domain} ({path.name}); sync the host"
    )


def _guest(path: GuestPath) -> str:
    return f"guest {path.name} ({path.domain})"


def _maybe_error(seen: bytes) -> bool:
    """Whether what followed virsh's banner is (the start of) its refusal, or nothing yet."""
    text = seen.lstrip()
    return text.startswith(b"error:") or b"error:".startswith(text)


def _errors(text: str) -> str:
    """virsh's `error:` lines, without the noise some hosts print first (polkit's)."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("error:")]
    return "; ".join(line.removeprefix("error:").strip() for line in lines)[-500:]


def _domstats(text: str) -> dict[str, dict[str, str]]:
    """`virsh domstats` output by domain name: `Domain: 'name'` then `  key=value` lines."""
    stats: dict[str, dict[str, str]] = {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("Domain: '") and line.endswith("'"):
            fields = stats.setdefault(line[len("Domain: '") : -1], {})
        elif "=" in line:
            key, _, value = line.strip().partition("=")
            fields[key] = value
    return stats


def _word(number: str) -> str:
    index = _int(number)
    return STATES[index] if 0 <= index < len(STATES) else "no state"


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
