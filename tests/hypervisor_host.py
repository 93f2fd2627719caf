"""A real hypervisor host for tests: this machine's libvirt (`qemu:///system`) behind a real
OpenSSH `sshd` of the test's own, on 127.0.0.1.

`LibvirtHost` starts virtlogd and libvirtd when they are not running, and an sshd on a free
port with its own host key that lets root in with a key made for the run (no password, no
PAM). Its guests are small (64 MiB, one vCPU, no disk, a user-mode NIC so PXE has something to
try, a serial console SeaBIOS prints on) and named `rh-test-<pid>-<token>-…`: they are
destroyed and undefined when the host closes, and those of a run that was killed (a dead pid)
are swept before the first new one is made. Needs root (`unavailable()` says why not).

    with libvirt_host() as host:
        uuid = host.define("web")
        path = host.guest(uuid)  # a GuestPath through the sshd
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from agents.protocol import Dialect, GuestPath, HostPath, Hypervisor, SshTarget

URI = "qemu:///system"
PREFIX = "rh-test-"
NAME = re.compile(r"rh-test-(\d+)-.*")
SSHD = "/usr/sbin/sshd"
USER = "root"
START_SECONDS = 20.0
PEERS = {
    "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
    "ssh-keygen": "openssh-client",
}


class HostError(RuntimeError):
    """The host could not be set up (libvirtd or sshd did not start, a domain not defined)."""


def unavailable() -> str | None:
    """Why this machine cannot be a hypervisor host for tests; None when it can."""
    if os.geteuid() != 0:
        return "libvirt host tests need root: they start libvirtd and an sshd for root"
    missing = [package for tool, package in PEERS.items() if shutil.which(tool) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append("openssh-server")
    if missing:
        return f"libvirt host tests need {', '.join(sorted(set(missing)))} (make peers)"
    return None


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`virsh -c qemu:///system …` on this machine (the host's side of a cross-check)."""
    done = subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=False, timeout=60
    )
    if check and done.returncode != 0:
        raise HostError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
    return done


def kvm() -> bool:
    """Whether guests can use KVM here (else QEMU emulates them: slower, same behaviour)."""
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


@dataclass
class LibvirtHost:
    """The sshd in front of libvirt, and the guests this run defined."""

    address: str
    port: int
    username: str
    private_key: str = field(repr=False)  # OpenSSH PEM: the ssh path's secret
    host_key: str  # SHA256:… as `ssh-keygen -lf` prints it
    folder: Path
    token: str
    sshd: subprocess.Popen[bytes] = field(repr=False)
    domains: dict[str, str] = field(default_factory=dict)  # uuid -> name

    @property
    def key_file(self) -> Path:
        return self.folder / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    def host(self, *, pinned: bool = True, host_key: str | None = None) -> HostPath:
        """The host's path as the central sends it: its key pinned (or `host_key` instead),
        or not pinned yet."""
        key = host_key or (self.host_key if pinned else None)
        target = SshTarget(
            self.address, self.username, self.private_key, Dialect.SHELL, self.port, key
        )
        return HostPath(target, Hypervisor.LIBVIRT, URI)

    def guest(self, uuid: str, *, host_key: str | None = None) -> GuestPath:
        return GuestPath(self.host(host_key=host_key), uuid, self.domains.get(uuid, "unknown"))

    def define(
        self,
        name: str,
        *,
        memory_mib: int = 64,
        vcpus: int = 1,
        serial: bool = True,
        autostart: bool = False,
        start: bool = False,
    ) -> str:
        """Define a small guest named `rh-test-<pid>-<token>-<name>`; its UUID."""
        full = f"{PREFIX}{os.getpid()}-{self.token}-{name}"
        console, bios = (
            (
                "<serial type='pty'><target port='0'/></serial>"
                "<console type='pty'><target type='serial' port='0'/></console>",
                "<bios useserial='yes'/>",
            )
            if serial
            else ("", "")
        )
        xml = f"""<domain type='{"kvm" if kvm() else "qemu"}'>
  <name>{escape(full)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
    {bios}
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='user'><model type='virtio'/></interface>
    {console}
  </devices>
</domain>"""
        file = self.folder / f"{full}.xml"
        file.write_text(xml)
        virsh("define", str(file))
        uuid = virsh("domuuid", full).stdout.strip()
        self.domains[uuid] = full
        if autostart:
            virsh("autostart", uuid)
        if start:
            virsh("start", uuid)
        return uuid

    def state(self, uuid: str) -> str:
        """`virsh domstate` (without the reason): the host's own word."""
        return virsh("domstate", uuid).stdout.strip()

    def xml(self, uuid: str, *, inactive: bool = True) -> str:
        return virsh("dumpxml", *(["--inactive"] if inactive else []), uuid).stdout

    def logins(self) -> int:
        """Key logins sshd accepted so far (its log): each is one SSH connection."""
        log = (self.folder / "sshd.log").read_text(errors="replace")
        return log.count("Accepted publickey for")

    def undefine(self, uuid: str) -> None:
        virsh("destroy", uuid, check=False)
        virsh("undefine", uuid, check=False)
        self.domains.pop(uuid, None)

    def close(self) -> None:
        for uuid in list(self.domains):
            self.undefine(uuid)
        self.sshd.terminate()
        try:
            self.sshd.wait(5)
        except subprocess.TimeoutExpired:
            self.sshd.kill()
            self.sshd.wait()


@contextlib.contextmanager
def libvirt_host() -> Iterator[LibvirtHost]:
    """libvirt running, an sshd in front of it, and every guest defined gone at the end."""
    ensure_libvirtd()
    sweep_leaked()
    with tempfile.TemporaryDirectory(prefix="rh-libvirt-") as folder:
        host = _start_sshd(Path(folder))
        try:
            yield host
        finally:
            host.close()


def ensure_libvirtd() -> None:
    """Start virtlogd and libvirtd as daemons (no systemd here) unless libvirt answers."""
    if virsh("uri", check=False).returncode == 0:
        return
    for daemon in ("virtlogd", "libvirtd"):
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
            subprocess.run([daemon, "-d"], check=True)
    deadline = time.monotonic() + START_SECONDS
    while (probe := virsh("uri", check=False)).returncode != 0:
        if time.monotonic() > deadline:
            raise HostError(f"libvirtd did not answer on {URI}: {probe.stderr.strip()}")
        time.sleep(0.2)


def sweep_leaked() -> None:
    """Destroy and undefine the guests of runs whose process is dead."""
    names = virsh("list", "--all", "--name").stdout.split()
    for name in names:
        match = NAME.fullmatch(name)
        if match is not None and not _alive(int(match[1])):
            virsh("destroy", name, check=False)
            virsh("undefine", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_sshd(folder: Path) -> LibvirtHost:
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(folder / name)],
            check=True,
        )
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(folder / "host_key.pub")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    fingerprint = listed.split()[1]
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
    for _ in range(3):  # a port found free may be taken before sshd binds it
        port = _free_port()
        config = folder / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
            f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nLogLevel INFO\n"
            # bash sources ~/.bashrc for commands sshd runs unless it is a nested shell: root's
            # here may be a developer's (pyenv: 0.3 s a command), no hypervisor host's
            "SetEnv SHLVL=1\n"
        )
        log = (folder / "sshd.log").open("wb")
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log)
        log.close()
        if _listening(sshd, port):
            host_public = (folder / "host_key.pub").read_text().split()
            (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_public[:2])}\n")
            return LibvirtHost(
                "127.0.0.1", port, USER, (folder / "client_key").read_text(), fingerprint,
                folder, secrets.token_hex(3), sshd,
            )  # fmt: skip
        sshd.kill()
        sshd.wait()
    raise HostError(f"sshd did not start: {(folder / 'sshd.log').read_text(errors='replace')}")


def _listening(sshd: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if sshd.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.05)
    return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
