"""Xen guests driven by `xl` on the dom0, over the host's shared SSH connection.

A guest is its config file, `/etc/xen/<name>.cfg`, known by the `uuid` line in it: `xl list -l`
shows the domains that run (uuid and domid), one `grep` over /etc/xen the config files of all
(a link in /etc/xen/auto marks autostart). Power is xl's commands on the domid. The boot order
is the config's HVM `boot` letters, which only `xl create` reads: so a one-time change leaves
a marker line with the old order in the file and is undone right after our next create.
docs/hypervisors.md has the mapping; sim/hypervisor.py stands in for Xen in the tests.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.drivers.base import ConsoleChannel, PoweredOff, Refused, Unsupported, require_secret
from agents.drivers.hosts import Hosts, Output
from agents.protocol import BootDevice, Guest, GuestPath, HostPath, PowerAction, PowerState

CONFIGS = "/etc/xen"
AUTOSTART = "/etc/xen/auto"
MARKER = "# rackhand-restore-boot"  # the boot order to put back after the next create
XL_DEFAULT_BOOT = "cd"  # xl.cfg(5): an HVM guest without `boot` tries the disk, then the CD
# xl.cfg(5) `boot`: c hard disk, d CD-ROM, n network; there is no letter for firmware setup
LETTERS = {BootDevice.DISK: "c", BootDevice.CDROM: "d", BootDevice.PXE: "n"}
KEYS = ("name", "uuid", "memory", "vcpus", "type", "builder", "boot")
# The identity lines of every config file in one command (links in /etc/xen/auto followed)
READ_CONFIGS = (
    "grep", "-R", "-H", "-s", "-E", "--include=*.cfg",
    rf"^[[:space:]]*({MARKER}|{'|'.join(KEYS)})[[:space:]]*=", CONFIGS,
)  # fmt: skip
# `xl list` state letters (xl(1)), the most telling first
STATES = (("c", "crashed"), ("d", "dying"), ("s", "shutdown"), ("p", "paused"),
          ("r", "running"), ("b", "blocked"))  # fmt: skip


@dataclass(frozen=True)
class _Domain:
    """A running domain as `xl list -l` shows it."""

    domid: int
    name: str
    uuid: str
    vcpus: int
    memory_mib: int


@dataclass
class _Config:
    """A guest's config file: the settings Rackhand reads, and whether it autostarts."""

    path: str
    settings: dict[str, str] = field(default_factory=dict)
    autostart: bool = False

    @property
    def uuid(self) -> str:
        return self.settings.get("uuid", "").lower()

    @property
    def name(self) -> str:
        return self.settings.get("name", "")

    @property
    def hvm(self) -> bool:
        return "hvm" in (self.settings.get("type"), self.settings.get("builder"))

    @property
    def boot(self) -> str:
        return self.settings.get("boot", "")

    @property
    def restore(self) -> str | None:
        """The boot order a one-time change replaced ("" = none was set), if one is pending."""
        return self.settings.get(MARKER)


def value(text: str) -> str:
    """A setting's value as xl reads it: the quoted string, else the bare word."""
    text = text.strip()
    quoted = re.match(r"""(["'])(.*?)\1""", text)
    return quoted[2] if quoted else text.partition("#")[0].strip()


class XlFlavour:
    """Guests of Xen dom0s driven with `xl`; built by the guests driver with its `Hosts`."""

    def __init__(self, hosts: Hosts) -> None:
        self._hosts = hosts

    async def guests(self, host: HostPath) -> list[Guest]:
        """Running domains, then the stopped guests whose config file has a uuid (xl would
        give one without it a new uuid at every create: nothing to follow it by)."""
        require_secret(host)
        running = await self._running(host)
        states = _states((await self._command(host, ["xl", "list"])).stdout)
        configs = await self._configs(host)
        by_uuid = {config.uuid: config for config in configs if config.uuid}
        found = [
            Guest(
                domain.uuid,
                domain.name,
                states.get(domain.domid, "running"),
                PowerState.ON,
                domain.vcpus,
                domain.memory_mib,
                uuid in by_uuid and by_uuid[uuid].autostart,
            )
            for uuid, domain in running.items()
        ]
        for uuid, config in by_uuid.items():
            if uuid not in running:
                vcpus = _number(config.settings.get("vcpus"), 1)
                memory = _number(config.settings.get("memory"), 128)
                found.append(
                    Guest(uuid, config.name, "shut off", PowerState.OFF, vcpus, memory,
                          config.autostart)
                )  # fmt: skip
        return sorted(found, key=lambda guest: (guest.name, guest.uuid))

    async def power(self, path: GuestPath, action: PowerAction) -> PowerState:
        require_secret(path)
        host, where = path.host, _where(path)
        domain = await self._find(path)
        if domain is None:
            config = await self._config(path)
            if action is PowerAction.ON:
                await self._create(path, config)
                return PowerState.ON
            if action in (PowerAction.CYCLE, PowerAction.RESET):
                raise PoweredOff(f"{where}: the guest is off; {action} was not sent")
            if action is PowerAction.NMI:
                raise Refused(f"{where}: the guest is off; nmi was not sent")
            return PowerState.OFF  # status, off, and soft: it is off already
        domid = str(domain.domid)
        if action is PowerAction.STATUS or action is PowerAction.ON:
            return PowerState.ON
        if action is PowerAction.OFF:
            await self._command(host, ["xl", "destroy", domid])
            return PowerState.OFF
        if action is PowerAction.SOFT:  # the OS shuts down in its own time: ends when asked
            await self._command(host, ["xl", "shutdown", domid])
            return PowerState.ON if await self._find(path) else PowerState.OFF
        if action is PowerAction.CYCLE:
            config = await self._config(path, running=True)
            await self._command(host, ["xl", "destroy", domid])
            await self._create(path, config)
            return PowerState.ON
        trigger = "reset" if action is PowerAction.RESET else "nmi"
        await self._command(host, ["xl", "trigger", domid, trigger])
        return PowerState.ON

    async def set_boot(self, path: GuestPath, device: BootDevice, persistent: bool) -> None:
        """Edit the config's `boot`; `xl create` reads it (a running guest: at its next
        on or cycle, as a BIOS setting would at the next boot)."""
        require_secret(path)
        where = _where(path)
        config = await self._config(path, running=await self._find(path) is not None)
        if not config.hvm:
            raise Unsupported(
                f'{where}: {config.path} is not an HVM guest (no `type = "hvm"`): a PV '
                "guest boots the kernel or boot loader its config names, it has no boot device"
            )
        if device is BootDevice.BIOS:
            raise Unsupported(
                f"{where}: xl cannot stop a guest in its firmware setup (xl.cfg(5) `boot` has "
                "no such device); open the guest's console and press the setup key at POST"
            )
        if device is BootDevice.DEFAULT:
            if config.restore is not None:
                await self._write(path, config, config.restore, None)
            return
        if device not in LETTERS:
            raise Unsupported(
                f"{where}: xl.cfg(5) `boot` knows only disk (c), cdrom (d) and pxe (n), not "
                f"{device}"
            )
        letter = LETTERS[device]
        original = config.boot if config.restore is None else config.restore  # a pending
        order = letter + (original or XL_DEFAULT_BOOT).replace(letter, "")  # one-time: undone
        await self._write(path, config, order, None if persistent else original)

    async def open_console(self, path: GuestPath, cols: int, rows: int) -> ConsoleChannel:
        require_secret(path)
        domain = await self._find(path)
        if domain is None:
            await self._config(path)
            raise Refused(
                f"{_where(path)}: the guest is off, and `xl console` needs a running domain; "
                "power it on first"
            )
        argv = ["xl", "console", str(domain.domid)]
        return await self._hosts.console(path.host, argv, cols=cols, rows=rows)

    # --- reading the host -------------------------------------------------------------------

    async def _find(self, path: GuestPath) -> _Domain | None:
        """The guest's domain if it runs. `xl list -l <name>` reads one domain's config,
        not all of them (a poll of 200 guests would read 200 configs 200 times); a guest
        renamed since the last sync, or not running, is looked for in the whole list."""
        uuid = path.domain.lower()
        if path.name and not path.name.startswith("-"):
            out = await self._hosts.run(path.host, ["xl", "list", "-l", path.name])
            if out.status == 0 and (domain := _parse(path.host, out).get(uuid)):
                return domain
        return (await self._running(path.host)).get(uuid)

    async def _running(self, host: HostPath) -> dict[str, _Domain]:
        """The running domains by uuid (Domain-0 left out: it is the host)."""
        return _parse(host, await self._command(host, ["xl", "list", "-l"]))

    async def _configs(self, host: HostPath) -> list[_Config]:
        """Every /etc/xen/*.cfg, autostart marked from the links in /etc/xen/auto."""
        out = await self._hosts.run(host, READ_CONFIGS)
        if out.status > 1 and not out.stdout:  # 1: no line matched (no config files)
            raise Refused(
                f"hypervisor {host.endpoint}: cannot read the config files in {CONFIGS} "
                f"(grep exit {out.status}{': ' + out.said if out.said else ''})"
            )
        files: dict[str, _Config] = {}
        for line in out.stdout.splitlines():
            match = re.match(r"(.*?\.cfg):\s*([#\w][\w -]*?)\s*=(.*)$", line)
            if match:
                config = files.setdefault(match[1], _Config(match[1]))
                config.settings[match[2]] = value(match[3])
        guests = [c for c in files.values() if c.path.rpartition("/")[0] == CONFIGS]
        for link in (c for c in files.values() if c.path.rpartition("/")[0] == AUTOSTART):
            for config in guests:
                same_uuid = link.uuid and link.uuid == config.uuid
                if same_uuid or (link.name and link.name == config.name):
                    config.autostart = True
        return guests

    async def _config(self, path: GuestPath, *, running: bool = False) -> _Config:
        """The config file with the guest's uuid; Refused when the host has none (a domain
        that runs without one was started from elsewhere: it can be stopped, not created)."""
        configs = [c for c in await self._configs(path.host) if c.uuid == path.domain.lower()]
        if configs:
            return configs[0]
        if running:
            raise Refused(
                f"{_where(path)}: no config file in {CONFIGS} has uuid {path.domain}, so xl "
                f'cannot create it again; add `uuid = "{path.domain}"` to its config file'
            )
        raise Refused(
            f"hypervisor {path.host.endpoint}: no domain {path.domain} ({path.name}); sync the host"
        )

    # --- changing it ------------------------------------------------------------------------

    async def _create(self, path: GuestPath, config: _Config) -> None:
        """`xl create`, then put back the boot order a one-time change replaced."""
        await self._command(path.host, ["xl", "create", config.path])
        if config.restore is not None:
            await self._write(path, config, config.restore, None)

    async def _write(
        self, path: GuestPath, config: _Config, boot: str, restore: str | None
    ) -> None:
        """Rewrite the config with `boot` ("" = no boot line) and the marker (None = none)."""
        text = (await self._command(path.host, ["cat", "--", config.path])).stdout
        lines = [
            line for line in text.splitlines() if not re.match(rf"\s*(boot|{MARKER})\s*=", line)
        ]
        if boot:
            lines.append(f'boot = "{boot}"')
        if restore is not None:
            lines.append(f'{MARKER} = "{restore}" (one-time boot device: put back by Rackhand)')
        await self._command(path.host, ["tee", "--", config.path], stdin="\n".join(lines) + "\n")

    async def _command(
        self, host: HostPath, argv: Sequence[str], stdin: str | None = None
    ) -> Output:
        """Run a command; its output, or the tool's own words as an error."""
        out = await self._hosts.run(host, argv, stdin=stdin)
        if out.status == 127:
            raise Unsupported(
                f"hypervisor {host.endpoint}: `{argv[0]}` is not installed (exit 127): the host "
                "is not a Xen dom0; set the ssh path's hypervisor to libvirt if it runs libvirt"
            )
        if out.status != 0:
            raise Refused(
                f"hypervisor {host.endpoint}: `{shlex.join(argv)}` failed (exit {out.status}): "
                f"{out.said or 'no message'}"
            )
        return out


def _parse(host: HostPath, out: Output) -> dict[str, _Domain]:
    """`xl list -l`'s domains by uuid (Domain-0 left out: it is the host)."""
    try:
        entries = json.loads(out.stdout or "[]")
        domains = [_domain(entry) for entry in entries]
    except (ValueError, TypeError, KeyError) as exc:
        raise Refused(
            f"hypervisor {host.endpoint}: `xl list -l` printed no domain list Rackhand can "
            f"read ({type(exc).__name__}: {exc}); does xl print JSON (xl.conf "
            "output_format)?"
        ) from exc
    return {domain.uuid: domain for domain in domains if domain.domid != 0}


def _where(path: GuestPath) -> str:
    return f"hypervisor {path.host.endpoint}, guest {path.name} ({path.domain})"


def _domain(entry: Any) -> _Domain:
    """One element of `xl list -l`'s array: `{"domid", "config": {"c_info", "b_info"…}}`."""
    info, build = entry["config"]["c_info"], entry["config"].get("b_info", {})
    domid = entry["domid"]
    if not isinstance(domid, int):
        raise TypeError(f"domid {domid!r} is not a number")
    return _Domain(
        domid,
        str(info["name"]),
        str(info.get("uuid", "")).lower(),
        int(build.get("max_vcpus", 0)),
        int(build.get("max_memkb", 0)) // 1024,
    )


def _states(table: str) -> dict[int, str]:
    """State words by domid from `xl list`'s table (`-b----` is blocked: waiting, idle)."""
    states = {}
    for line in table.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 6 or not parts[-5].isdigit():
            continue
        flags = parts[-2]
        states[int(parts[-5])] = next(
            (word for letter, word in STATES if letter in flags), "running"
        )
    return states


def _number(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() else default
