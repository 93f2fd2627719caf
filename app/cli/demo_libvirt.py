"""The machine's own libvirt as the demo's third hypervisor, when it has one.

`rackhand serve --demo` run as root on a machine where `virsh -c qemu:///system` answers and
OpenSSH's server is installed: an `sshd` of the demo's own on 127.0.0.1 (key login as root; its
keys kept in the data folder, so the pinned host key holds from one start to the next) stands
for a remote host's SSH, and two small guests (64 MiB, no disk, firmware on the serial port,
fixed UUIDs) are defined unless they are (they stay: `virsh undefine` removes them). The sshd
stops with the demo. Elsewhere the demo's hypervisors are only the simulated ones.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.inventory.demo import LOCAL_GUESTS, LOCAL_LIBVIRT_PORT, LocalLibvirt

SSHD = Path("/usr/sbin/sshd")
URI = "qemu:///system"
START_SECONDS = 10.0
PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass(frozen=True)
class Local:
    """The demo's sshd in front of libvirt: its folder, and what the catalogue needs."""

    folder: Path
    host: LocalLibvirt = field(repr=False)


def prepare(data_dir: Path) -> Local | None:
    """Keys for the demo's sshd (made once), or None when this machine cannot host it."""
    if os.geteuid() != 0 or not SSHD.exists() or shutil.which("virsh") is None:
        return None
    if _virsh("uri").returncode != 0:  # libvirtd not running: the demo does not start it
        return None
    folder = data_dir / "demo-libvirt"
    folder.mkdir(mode=0o700, exist_ok=True)
    for name in ("host_key", "client_key"):
        if not (folder / name).exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"rackhand-demo-{name}",
                 "-f", str(folder / name)],
                check=True,
            )  # fmt: skip
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(folder / "host_key.pub")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    key = (folder / "client_key").read_text()
    return Local(folder, LocalLibvirt(LOCAL_LIBVIRT_PORT, key, listed.split()[1]))


@contextlib.contextmanager
def running(local: Local | None) -> Iterator[str | None]:
    """The demo's sshd and guests while the demo runs; a line for the operator (None if the
    machine has no libvirt for the demo, or its sshd could not start)."""
    if local is None:
        yield None
        return
    sshd = _start_sshd(local.folder)
    if sshd is None:
        yield (
            f"demo: hv03 (this machine's libvirt) will not answer: its sshd on 127.0.0.1:"
            f"{LOCAL_LIBVIRT_PORT} did not start (is another demo running?)"
        )
        return
    try:
        try:
            ours = [name for name in LOCAL_GUESTS if _define(name)]
        except subprocess.SubprocessError as exc:  # the host's QEMU lacks what they need
            yield f"demo: hv03 (this machine's libvirt) without demo guests: {exc}"
            return
        yield (
            f"demo: this machine's libvirt is hv03 (ssh 127.0.0.1:{LOCAL_LIBVIRT_PORT}); demo "
            f"guests {', '.join(ours) or 'none (their names are taken)'}"
        )
    finally:
        sshd.terminate()
        try:
            sshd.wait(5)
        except subprocess.TimeoutExpired:
            sshd.kill()
            sshd.wait()


def guest_uuid(name: str) -> str:
    """A demo guest's UUID: the same at every start, so its device keeps its history."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://rackhand.dev/demo/{name}"))


def _start_sshd(folder: Path) -> subprocess.Popen[bytes] | None:
    """Our sshd, once it answers; None if the port was taken (it must be ours that answers)."""
    if _answers():
        return None
    config = folder / "sshd_config"
    config.write_text(
        f"Port {LOCAL_LIBVIRT_PORT}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\n"
        # bash reads ~/.bashrc for a command sshd runs unless it is a nested shell; root's may
        # be a developer's (pyenv: 0.3 s a command), which no hypervisor host has
        "SetEnv SHLVL=1\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
    with (folder / "sshd.log").open("wb") as log:
        sshd = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stderr=log, preexec_fn=_die_with_us
        )
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and sshd.poll() is None:
        if _answers():
            return sshd
        time.sleep(0.05)
    sshd.kill()
    sshd.wait()
    return None


def _die_with_us() -> None:
    """In the sshd child before it runs: SIGTERM when the demo ends, however it ends (uvicorn
    raises SIGTERM again after its shutdown, so no `finally` of ours runs then)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", LOCAL_LIBVIRT_PORT), 0.5).close()
    except OSError:
        return False
    return True


def _define(name: str) -> bool:
    """Define the guest unless it is (64 MiB, no disk, a user-mode NIC for PXE, SeaBIOS on the
    serial console); False when a domain of someone else's has that name (left alone)."""
    known = _virsh("domuuid", name)
    if known.returncode == 0:
        return known.stdout.strip() == guest_uuid(name)
    kind = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "qemu"
    xml = f"""<domain type='{kind}'>
  <name>{name}</name>
  <uuid>{guest_uuid(name)}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/><bios useserial='yes'/></os>
  <features><acpi/></features>
  <devices>
    <interface type='user'><model type='virtio'/></interface>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>"""
    subprocess.run(
        ["virsh", "-c", URI, "define", "/dev/stdin"], input=xml, text=True, capture_output=True,
        check=True,
    )  # fmt: skip
    return True


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=30, check=False
    )
