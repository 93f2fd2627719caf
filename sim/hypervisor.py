"""A simulated hypervisor host (Xen's `xl`, libvirt's `virsh`, or both) reached over SSH.

Commands arrive as SSH exec requests and run against an in-memory host: an xl guest is a config
file in /etc/xen (and a domain with a domid while it runs), a libvirt guest a definition. Each
guest is a `Machine`, so `xl console` and `virsh console` show the simulated firmware booting
as the servers' consoles do. Output and errors follow xl(1) and virsh(1) as far as Rackhand
reads them (docs/hypervisors.md); a tool the host lacks is `command not found` (127), as a
shell says it. The few file commands (`cat`, `tee`, `ls`, `grep`) see /etc/xen only.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import time
import uuid as uuids
from collections.abc import Iterable, Mapping
from typing import Any

import asyncssh

from sim import virsh
from sim.domain import Attach, Done, Guest, Toolstack, toolstacks
from sim.machine import BootOverride, Control, Machine, Power, Timing
from sim.ssh import Session, SshDevice

XEN = "/etc/xen"
AUTO = "/etc/xen/auto"
ESCAPE = 0x1D  # Ctrl-]: leaves `xl console` and `virsh console`
DOM0_MEMORY_MIB, DOM0_VCPUS = 2048, 4
HOST_TIMING = Timing(on_delay=0.0, cycle_off=0.3, soft_delay=1.0, post_seconds=1.5)
VALUED = {"console": ("-t", "-n")}  # xl options that take a value: console -t serial -n 0
XL_TRIGGERS = ("nmi", "reset", "init", "power", "sleep", "s3resume")


def parse_cfg(text: str) -> dict[str, str]:
    """The `key = value` settings of an xl config file (quotes removed, lists kept raw)."""
    settings = {}
    for line in text.splitlines():
        match = re.match(r"\s*([A-Za-z_]\w*)\s*=\s*(.*)$", line)
        if not match:
            continue
        value = match[2].strip()
        quoted = re.match(r"""(["'])(.*?)\1""", value)
        settings[match[1]] = quoted[2] if quoted else value.partition("#")[0].strip()
    return settings


def xl_cfg(name: str, uuid: str | None, vcpus: int, memory_mib: int, boot: str) -> str:
    """An HVM guest's config file, as an administrator writes one (xl.cfg(5))."""
    identity = f'uuid = "{uuid}"\n' if uuid else ""
    return (
        f"# {name}: an HVM guest with a serial console (xl.cfg(5))\n"
        f'name = "{name}"\ntype = "hvm"\n{identity}memory = {memory_mib}\nvcpus = {vcpus}\n'
        f'boot = "{boot}"\n'
        f'disk = [ "format=raw, vdev=xvda, access=rw, target=/var/lib/xen/images/{name}.img" ]\n'
        'vif = [ "bridge=xenbr0" ]\nserial = "pty"\non_poweroff = "destroy"\n'
        'on_reboot = "restart"\non_crash = "destroy"\n'
    )


class Hypervisor(SshDevice):
    """A Xen dom0 (`xl`), a libvirt host (`virsh`), or both; guests added with `add_guest`."""

    kind = "hypervisor"

    def __init__(
        self,
        name: str,
        dialect: str,
        users: Mapping[str, str],
        key: asyncssh.SSHKey,
        *,
        authorized_keys: Iterable[asyncssh.SSHKey] = (),
        timing: Timing | None = None,
        uris: Iterable[str] = virsh.URIS,
        max_sessions: int | None = None,
    ) -> None:
        """`max_sessions`: open sessions per connection, as sshd's MaxSessions (its default
        is 10; None: no limit)."""
        self.toolstacks = toolstacks(dialect)
        super().__init__(name, "+".join(sorted(self.toolstacks, reverse=True)), users, key)
        self.authorized_keys = list(authorized_keys)
        self.max_sessions = max_sessions
        self.timing = timing or HOST_TIMING
        self.uris = tuple(uris)
        self.files: dict[str, str] = {}  # path -> text: /etc/xen/*.cfg
        self.links: dict[str, str] = {}  # path -> target: /etc/xen/auto/*.cfg
        self.guests: dict[str, Guest] = {}
        self.commands: list[str] = []  # every command line run, for tests
        self.booted = time.time()
        self._next_domid = 1

    # --- the host's guests ------------------------------------------------------------------

    def add_guest(
        self,
        name: str,
        toolstack: Toolstack | None = None,
        *,
        uuid: str | None = None,
        with_uuid: bool = True,
        vcpus: int = 1,
        memory_mib: int = 512,
        boot: str = "c",
        running: bool = False,
        autostart: bool = False,
    ) -> Guest:
        """A guest as an administrator set it up (xl: its config file, and a domain if
        `running`; `with_uuid=False` leaves the uuid out of the config file)."""
        stack = toolstack or min(self.toolstacks, key=str)
        if stack not in self.toolstacks:
            raise ValueError(f"{self.name} has no {stack}")
        guest = Guest(
            name, uuid or str(uuids.uuid4()), stack, Machine(self.timing, name=name), vcpus,
            memory_mib, boot,
        )  # fmt: skip
        self.guests[name] = guest
        if stack is Toolstack.XL:
            path = f"{XEN}/{name}.cfg"
            cfg = xl_cfg(name, guest.uuid if with_uuid else None, vcpus, memory_mib, boot)
            self.files[path] = cfg
            if autostart:
                self.links[f"{AUTO}/{name}.cfg"] = path
        else:
            guest.autostart = autostart
            guest.definition = virsh.definition(name, guest.uuid, vcpus, memory_mib, boot)
        if running:
            self.start_guest(guest)
        return guest

    def guest(self, name: str) -> Guest:
        self._settle()
        return self.guests[name]

    def start_guest(self, guest: Guest) -> None:
        """A new domain (a new domid); a libvirt guest runs with a copy of its definition."""
        if guest.definition is not None:
            guest.live = copy.deepcopy(guest.definition)
            guest.boot, guest.menu = virsh.boot_order(guest.live)
        guest.domid, self._next_domid = self._next_domid, self._next_domid + 1
        guest.started, guest.reason = time.time(), "booted"
        guest.machine.set_boot(BootOverride(guest.firmware()))
        guest.machine.press(Power.ON)

    def stop_guest(self, guest: Guest, reason: str) -> None:
        guest.machine.press(Power.OFF)
        guest.domid, guest.reason, guest.live = None, reason, None
        for console in list(guest.consoles):
            console.leave(0)

    def reset_guest(self, guest: Guest) -> None:
        """A hard reset: the firmware starts again, with the boot order the guest runs with."""
        guest.machine.set_boot(BootOverride(guest.firmware()))
        guest.machine.control(Control.RESET)

    def _settle(self) -> None:
        """A guest whose OS finished shutting down is gone (xl) or shut off (libvirt)."""
        for guest in self.guests.values():
            if guest.running and guest.machine.power is Power.OFF:
                self.stop_guest(guest, "shutdown")

    # --- commands ---------------------------------------------------------------------------

    def run(self, command: str, stdin: bytes = b"", tty: bool = False) -> Done | Attach:
        """Run one command line as the host's shell would (no pipes or globbing)."""
        self.commands.append(command)
        self._settle()
        try:
            argv = shlex.split(command)
        except ValueError as error:
            return Done(2, err=f"bash: syntax error: {error}\n")
        if not argv:
            return Done()
        tool, args = argv[0], argv[1:]
        if tool == "xl" and Toolstack.XL in self.toolstacks:
            return self._xl(args)
        if tool == "virsh" and Toolstack.LIBVIRT in self.toolstacks:
            return virsh.run(self, args, stdin, tty)
        if tool == "cat":
            return self._cat(args)
        if tool == "tee":
            return self._tee(args, stdin)
        if tool == "ls":
            return self._ls(args)
        if tool == "grep":
            return self._grep(args)
        return Done(127, err=f"bash: {tool}: command not found\n")

    def needs_input(self, command: str) -> bool:
        """Whether the command reads standard input to its end before it does anything."""
        try:
            argv = shlex.split(command)
        except ValueError:
            return False
        return argv[:1] == ["tee"] or ("virsh" in argv[:1] and "define" in argv)

    # --- xl ---------------------------------------------------------------------------------

    def _xl(self, args: list[str]) -> Done | Attach:
        if not args:
            return Done(1, err="Usage xl [-vfNtT] <subcommand> [args]\n")
        verb, options, words = args[0], list[str](), list[str]()
        rest = iter(args[1:])
        for arg in rest:
            if arg == "--":
                words += rest
            elif arg in VALUED.get(verb, ()):
                options.append(f"{arg}{next(rest, '')}")
            elif arg.startswith("-"):
                options.append(arg)
            else:
                words.append(arg)
        wanted = {"create": 1, "destroy": 1, "shutdown": 1, "reboot": 1, "trigger": 2,
                  "console": 1, "domid": 1}.get(verb, 0)  # fmt: skip
        if len(words) < wanted:
            plural = "s" if wanted > 1 else ""
            return Done(2, err=f"'xl {verb}' requires at least {wanted} argument{plural}.\n\n")
        if verb == "list":
            return self._xl_list(words, long="-l" in options or "--long" in options)
        if verb == "uptime":
            return self._xl_uptime()
        if verb == "create":
            return self._xl_create(words[0])
        if verb == "domid":
            guest = self._xl_running().get(words[0])
            if guest is None:
                return Done(
                    1,
                    err=f"Can't get domid of domain name '{words[0]}', maybe this domain does "
                    "not exist.\n",
                )
            return Done(out=f"{guest.domid}\n")
        if verb not in ("destroy", "shutdown", "reboot", "trigger", "console"):
            return Done(1, err="command not implemented\n")
        found = self._xl_find(words[0], verb)
        if isinstance(found, Done):
            return found
        if found is None:
            if verb == "destroy":
                return Done(1, err="Cannot destroy privileged domain 0.\n\n")
            return Done(1, err=f"sim: {verb} of Domain-0 (the host itself) is not simulated\n")
        return self._xl_act(found, verb, words[1:])

    def _xl_act(self, guest: Guest, verb: str, words: list[str]) -> Done | Attach:
        if verb == "destroy":
            self.stop_guest(guest, "destroyed")
            return Done()
        if verb == "shutdown":
            guest.machine.control(Control.SOFT)
            return Done(err=f"Shutting down domain {guest.domid}\n")
        if verb == "reboot":  # the guest's own reboot: xl builds the domain anew (a new domid)
            domid = guest.domid
            self.stop_guest(guest, "rebooted")
            self.start_guest(guest)
            return Done(err=f"Rebooting domain {domid}\n")
        if verb == "console":
            return Attach(guest)
        trigger = words[0]
        if trigger not in XL_TRIGGERS:
            return Done(1, err=f'Invalid trigger "{trigger}"\n')
        if trigger == "nmi":
            guest.machine.control(Control.DIAG)
        elif trigger == "reset":
            self.reset_guest(guest)
        elif trigger == "power":
            guest.machine.control(Control.SOFT)
        return Done()

    def _xl_running(self) -> dict[str, Guest]:
        return {
            g.name: g for g in self.guests.values() if g.toolstack is Toolstack.XL and g.running
        }

    def _xl_find(self, ident: str, verb: str) -> Guest | Done | None:
        """The running domain `ident` names (a domid or a name); None for Domain-0."""
        running = self._xl_running()
        if ident.isdigit():
            if int(ident) == 0:
                return None
            by_id = {g.domid: g for g in running.values()}
            if int(ident) not in by_id:
                return Done(
                    1,
                    err=f"libxl: error: libxl_domain.c: Domain {int(ident)}:Non-existant domain\n"
                    f"{verb} failed (rc=-21)\n",
                )
            return by_id[int(ident)]
        if ident == "Domain-0":
            return None
        if ident not in running:
            return Done(1, err=f"{ident} is an invalid domain identifier (rc=-6)\n")
        return running[ident]

    def _xl_list(self, names: list[str], long: bool) -> Done:
        running = sorted(self._xl_running().values(), key=lambda g: g.domid or 0)
        for name in names:
            if name != "Domain-0" and name not in {g.name for g in running}:
                return Done(1, err=f"{name} is an invalid domain identifier (rc=-6)\n")
        if names:
            running = [g for g in running if g.name in names]
        dom0 = not names or "Domain-0" in names
        if long:
            entries = ([_dom0_json()] if dom0 else []) + [_xl_json(g) for g in running]
            return Done(out=json.dumps(entries, indent=4) + "\n")
        lines = ["Name                                        ID   Mem VCPUs\tState\tTime(s)"]
        if dom0:
            uptime = time.time() - self.booted
            lines.append(f"{'Domain-0':<40} {0:5d} {DOM0_MEMORY_MIB:5d} {DOM0_VCPUS:5d}     "
                         f"r-----  {uptime / 50:8.1f}")  # fmt: skip
        for guest in running:
            busy = guest.machine.firmware.screen in ("post", "setup", "pxe", "boot")
            flags = "r-----" if busy else "-b----"
            seconds = (time.time() - guest.started) / 20
            lines.append(f"{guest.name:<40} {guest.domid:5d} {guest.memory_mib:5d} "
                         f"{guest.vcpus:5d}     {flags}  {seconds:8.1f}")  # fmt: skip
        return Done(out="\n".join(lines) + "\n")

    def _xl_uptime(self) -> Done:
        lines = [f"{'Name':<33} {'ID':>4} Uptime"]
        lines.append(f"{'Domain-0':<33} {0:4d} {_uptime(time.time() - self.booted)}")
        for guest in sorted(self._xl_running().values(), key=lambda g: g.domid or 0):
            lines.append(
                f"{guest.name:<33} {guest.domid:4d} {_uptime(time.time() - guest.started)}"
            )
        return Done(out="\n".join(lines) + "\n")

    def _xl_create(self, path: str) -> Done:
        parsing = f"Parsing config from {path}\n"
        text = self._read(path)
        if text is None:
            return Done(
                1, err=f"{parsing}Failed to read config file: {path}: No such file or directory\n"
            )
        cfg = parse_cfg(text)
        name = cfg.get("name", "")
        if not name:
            return Done(1, err=f"{parsing}Domain name must be specified.\n")
        if name in self._xl_running():
            return Done(
                1,
                err=f"{parsing}libxl: error: libxl_domain.c:libxl__domain_rename: domain with "
                f'name "{name}" already exists.\nlibxl: error: libxl_create.c:'
                "initiate_domain_create: cannot make domain: -6\n",
            )
        guest = self.guests.get(name)
        if guest is None or guest.toolstack is not Toolstack.XL:
            guest = Guest(name, "", Toolstack.XL, Machine(self.timing, name=name))
            self.guests[name] = guest
        guest.uuid = cfg.get("uuid") or str(uuids.uuid4())  # none: xl makes one up each time
        guest.vcpus = int(cfg.get("vcpus", "1"))
        guest.memory_mib = int(cfg.get("memory", "128"))
        guest.boot = cfg.get("boot", "cd")  # xl.cfg(5): default "cd"
        self.start_guest(guest)
        return Done(err=parsing)

    # --- files ------------------------------------------------------------------------------

    def _read(self, path: str) -> str | None:
        return self.files.get(self.links.get(path, path))

    def _cat(self, args: list[str]) -> Done:
        out, err = [], []
        for path in (a for a in args if a != "--"):
            text = self._read(path)
            if text is None:
                err.append(f"cat: {path}: No such file or directory\n")
            else:
                out.append(text)
        return Done(1 if err else 0, "".join(out), "".join(err))

    def _tee(self, args: list[str], stdin: bytes) -> Done:
        paths = [a for a in args if a != "--"]
        text = stdin.decode(errors="replace")
        for path in paths:
            if not path.startswith(f"{XEN}/") or path.count("/") != 3:
                return Done(1, text, f"tee: {path}: Permission denied\n")
            self.files[self.links.get(path, path)] = text
        return Done(out=text)

    def _ls(self, args: list[str]) -> Done:
        out, err = [], []
        for pattern in [a for a in args if not a.startswith("-")] or [XEN]:
            if pattern.rstrip("/") in (XEN, AUTO):
                directory = pattern.rstrip("/")
                names = [p for p in self._paths() if p.rpartition("/")[0] == directory]
                out += sorted(p.rpartition("/")[2] for p in names)
                if directory == XEN:
                    out.append("auto")
                continue
            folder, _, glob = pattern.rpartition("/")
            matched = sorted(
                p
                for p in self._paths()
                if p.rpartition("/")[0] == folder
                and fnmatch.fnmatchcase(p.rpartition("/")[2], glob)
            )
            if not matched:
                err.append(f"ls: cannot access '{pattern}': No such file or directory\n")
            out += matched
        return Done(2 if err else 0, "".join(f"{line}\n" for line in out), "".join(err))

    def _grep(self, args: list[str]) -> Done:
        """`grep [-RHsE] [--include=GLOB] PATTERN PATH…` over the files (links followed)."""
        options = [a for a in args if a.startswith("-")]
        words = [a for a in args if not a.startswith("-")]
        if not words:
            return Done(2, err="Usage: grep [OPTION]... PATTERNS [FILE]...\n")
        include = next((o.partition("=")[2] for o in options if o.startswith("--include=")), "*")
        posix = {"[:space:]": r"\s", "[:alpha:]": "a-zA-Z", "[:digit:]": "0-9"}
        pattern = words[0]
        for name, python in posix.items():
            pattern = pattern.replace(name, python)
        regex = re.compile(pattern)
        recursive = any(o in ("-R", "-r", "--recursive") or "R" in o[1:] for o in options)
        out: list[str] = []
        for root in words[1:]:
            root = root.rstrip("/")
            chosen = [
                p
                for p in self._paths()
                if (p == root or (recursive and p.startswith(root + "/")))
                and fnmatch.fnmatchcase(p.rpartition("/")[2], include)
            ]
            for path in sorted(chosen):
                for line in (self._read(path) or "").splitlines():
                    if regex.search(line):
                        out.append(f"{path}:{line}\n")
        return Done(0 if out else 1, "".join(out))

    def _paths(self) -> list[str]:
        return [*self.files, *self.links]

    # --- SSH --------------------------------------------------------------------------------

    def session(self, login: str) -> Session:
        return _Exec(self)

    def describe(self) -> dict[str, Any]:
        guests = [
            {"name": g.name, "uuid": g.uuid, "toolstack": str(g.toolstack)}
            for g in self.guests.values()
        ]
        return {**super().describe(), "guests": guests}


def _uptime(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:2d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days} day{'s' * (days != 1)}, {clock}" if days else clock


def _dom0_json() -> dict[str, Any]:
    return {
        "domid": 0,
        "config": {
            "c_info": {"type": "pv", "name": "Domain-0"},
            "b_info": {
                "max_vcpus": DOM0_VCPUS,
                "avail_vcpus": list(range(DOM0_VCPUS)),
                "max_memkb": DOM0_MEMORY_MIB * 1024,
                "target_memkb": DOM0_MEMORY_MIB * 1024,
                "type.pv": {},
            },
        },
    }


def _xl_json(guest: Guest) -> dict[str, Any]:
    """A running domain as `xl list -l` prints it (libxl_domain_config, JSON)."""
    memkb = guest.memory_mib * 1024
    return {
        "domid": guest.domid,
        "config": {
            "c_info": {
                "type": "hvm",
                "name": guest.name,
                "uuid": guest.uuid,
                "run_hotplug_scripts": "True",
            },
            "b_info": {
                "max_vcpus": guest.vcpus,
                "avail_vcpus": list(range(guest.vcpus)),
                "max_memkb": memkb,
                "target_memkb": memkb,
                "video_memkb": 8192,
                "shadow_memkb": 5120,
                "sched_params": {},
                "device_model_version": "qemu_xen",
                "type.hvm": {"boot": guest.boot, "serial_list": ["pty"], "acpi": "True"},
            },
            "disks": [
                {
                    "pdev_path": f"/var/lib/xen/images/{guest.name}.img",
                    "vdev": "xvda",
                    "format": "raw",
                    "readwrite": 1,
                }
            ],
            "nics": [{"devid": 0, "bridge": "xenbr0", "nictype": "vif_ioemu"}],
            "on_poweroff": "destroy",
            "on_reboot": "restart",
            "on_crash": "destroy",
        },
    }


class _Exec(asyncssh.SSHServerSession[bytes]):
    """One exec request: a command's output and exit status, or a console on the PTY."""

    def __init__(self, host: Hypervisor) -> None:
        self._host = host
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._tty = False
        self._command: str | None = None
        self._input = bytearray()
        self._guest: Guest | None = None
        self._detach: Any = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, *args: Any) -> bool:
        self._tty = True
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def shell_requested(self) -> bool:
        return True

    def session_started(self) -> None:
        if self._command is None:
            self._finish(
                Done(1, err="This simulated host runs commands only (ssh host 'xl list').\n")
            )
        elif not self._host.needs_input(self._command):
            self._run()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._guest is None:
            self._input += data
            return
        if ESCAPE in data:
            before = data[: data.index(ESCAPE)]
            if before:
                self._guest.machine.serial.feed(before)
            self.leave(0)
            return
        self._guest.machine.serial.feed(data)

    def break_received(self, msec: int) -> bool:
        if self._guest is None:
            return False
        self._guest.machine.serial.send_break()
        return True

    def eof_received(self) -> bool:
        if (
            self._guest is None
            and self._command is not None
            and self._host.needs_input(self._command)
        ):
            self._run()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()

    def _run(self) -> None:
        assert self._command is not None
        result = self._host.run(self._command, bytes(self._input), self._tty)
        if isinstance(result, Done):
            self._finish(result)
            return
        guest = result.guest
        if result.force:
            for other in list(guest.consoles):
                other.leave(1)
        self._write(result.banner.replace("\n", "\r\n").encode())
        self._guest = guest
        guest.consoles.append(self)
        self._detach = guest.machine.serial.attach(self._write)

    def leave(self, status: int) -> None:
        """End the console: the escape typed, the domain gone, or another console took it."""
        self._release()
        if self._chan is not None and not self._chan.is_closing():
            self._chan.exit(status)

    def _release(self) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None
        if self._guest is not None and self in self._guest.consoles:
            self._guest.consoles.remove(self)
        self._guest = None

    def _finish(self, done: Done) -> None:
        if self._chan is None or self._chan.is_closing():
            return
        if self._tty:  # one terminal for both streams, newlines as the tty driver sends them
            self._write((done.out + done.err).replace("\n", "\r\n").encode())
        else:
            self._write(done.out.encode())
            if done.err:
                self._chan.write_stderr(done.err.encode())
        self._chan.exit(done.status)

    def _write(self, data: bytes) -> None:
        if self._chan is not None and not self._chan.is_closing():
            self._chan.write(data)
