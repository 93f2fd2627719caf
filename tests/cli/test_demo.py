"""`rackhand serve --demo`: a quiet start that ends with where to go and how to log in, and
simulated machines that greet by their catalogue names."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from app.cli.demo import credentials, summary
from app.cli.demo_libvirt import guest_uuid
from app.inventory.demo import (
    DEMO_PASSWORD,
    FIRST_BMC_PORT,
    FIRST_SSH_PORT,
    LOCAL_GUESTS,
    LOCAL_LIBVIRT_PORT,
)
from tests.live import RACKHAND, free_port, until
from tests.sim.fleet import read_lines_until

pytestmark = pytest.mark.xdist_group("readme-demo")  # the demo's simulator ports are fixed
LAST = b"  log in as admin"  # the last line of the start
URI = "qemu:///system"
# The demo adds this machine's libvirt (hv03) when it can: root, sshd, libvirtd answering.
LOCAL = (
    os.geteuid() == 0
    and Path("/usr/sbin/sshd").exists()
    and shutil.which("virsh") is not None
    and subprocess.run(["virsh", "-c", URI, "uri"], capture_output=True).returncode == 0
)
WIRING = {
    "devices": [
        {"name": "cs1", "address": "127.0.0.1", "port": FIRST_SSH_PORT, "username": "admin",
         "password": DEMO_PASSWORD, "host_key": "SHA256:abc", "dialect": "opengear"},
        {"name": "pdu1", "address": "127.0.0.1", "port": FIRST_SSH_PORT + 3, "username": "admin",
         "password": DEMO_PASSWORD, "host_key": "SHA256:def", "dialect": "raritan_px"},
    ],
    "machines": [{"bmc_port": FIRST_BMC_PORT + n} for n in range(3)],
}  # fmt: skip


def test_the_summary_points_at_verbose_and_verbose_names_the_catalogue_boxes() -> None:
    line = summary(WIRING, verbose=False)
    assert line == (
        "demo: 3 simulated BMCs on 127.0.0.1:16230-16232, 2 SSH devices on "
        "127.0.0.1:16300,16303; credentials: rackhand serve --demo --verbose"
    )
    shown = credentials(WIRING)
    assert shown[1].endswith(f"127.0.0.1:16230-16232, user admin, password {DEMO_PASSWORD}")
    assert shown[2].split()[:4] == ["cs-01", "ssh", "-p", "16300"]
    assert "host key SHA256:def (raritan_px)" in shown[3]
    assert shown[3].startswith("  pdu-a1 ")


def test_the_demo_starts_quietly_and_web01_greets_by_its_name(tmp_path: Path) -> None:
    _wait_for_the_demo_ports()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RACKHAND_")}
    command = [RACKHAND, "serve", "--demo", "--port", str(port), "--data-dir", str(tmp_path)]
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its simulator and workers go with it at the end
    )
    try:
        lines = read_lines_until(process, LAST, deadline=time.monotonic() + 90)
        start = b"\n".join(lines).decode()
        assert any(line.startswith(LAST) for line in lines), start
        lines = lines[: next(n for n, line in enumerate(lines) if line.startswith(LAST)) + 1]
        match = re.fullmatch(r"  log in as admin, password: (\S+) .*", lines[-1].decode())
        assert match, start
        url = f"http://127.0.0.1:{port}"
        screen = _boot_on_console(url, match[1], "web01", b"web01 login: ")
        assert b"Rackhand SimOS 1.0 web01 ttyS0" in screen
        if LOCAL:
            _sync_this_machines_libvirt(url, match[1])
    finally:
        process.terminate()
        rest = process.communicate(timeout=30)[0].decode()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything it left behind
    assert "Warning:" not in start
    assert "deprecat" not in start.lower()
    assert "wiring:" not in start
    if LOCAL:  # its sshd goes with it, however it ends
        until(lambda: _closed(LOCAL_LIBVIRT_PORT), "the demo's sshd to stop", 10)
    assert DEMO_PASSWORD not in start  # the simulated devices' credentials: --verbose only
    assert lines[-3:-1] == [
        b"demo: 48 simulated BMCs on 127.0.0.1:16230-16277, 8 SSH devices on "
        b"127.0.0.1:16300-16307; credentials: rackhand serve --demo --verbose",
        f"Rackhand is ready: {url}/  (the dashboard; API docs: {url}/api/v1/docs)".encode(),
    ]
    assert "Traceback" not in start + rest


def _closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except ConnectionRefusedError:
        return True
    return False


def _sync_this_machines_libvirt(url: str, password: str) -> None:
    """hv03 is this machine's libvirt behind the demo's sshd: its sync finds the demo's two
    guests (among whatever else the machine runs), and one of them powers like a server."""
    login = {"username": "admin", "password": password}
    token = httpx.post(f"{url}/api/v1/auth/token", data=login).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    synced = httpx.post(f"{url}/api/v1/devices/hv03/sync", headers=auth, timeout=60)
    assert synced.status_code == 200, synced.text
    guests = {g["uuid"]: g for g in httpx.get(f"{url}/api/v1/devices/hv03/guests",
                                              headers=auth).json()}  # fmt: skip
    for name in LOCAL_GUESTS:
        assert guests[guest_uuid(name)]["domain"] == name
    device = guests[guest_uuid(LOCAL_GUESTS[0])]["device"]
    status = httpx.post(f"{url}/api/v1/devices/{device}/power", json={"action": "status"},
                        headers=auth, timeout=60).json()  # fmt: skip
    assert (status["status"], status["power_state"], status["path"]) == (
        "succeeded", "off", "libvirt"), status  # fmt: skip


def _boot_on_console(url: str, password: str, device: str, wanted: bytes) -> bytes:
    """Power `device` on while watching its console server port; the screen up to `wanted`."""
    login = {"username": "admin", "password": password}
    token = httpx.post(f"{url}/api/v1/auth/token", data=login).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    opened = httpx.post(
        f"{url}/api/v1/devices/{device}/consoles",
        json={"via": "console_port"},
        headers=auth,
        timeout=30,
    )
    assert opened.status_code == 201, opened.text
    stream = f"{url.replace('http', 'ws', 1)}{opened.json()['stream']}"
    with connect(stream, additional_headers=auth) as ws:
        power = {"action": "on"}
        switched = httpx.post(
            f"{url}/api/v1/devices/{device}/power", json=power, headers=auth, timeout=60
        )
        assert switched.json()["status"] == "succeeded", switched.text
        screen = b""
        deadline = time.monotonic() + 30
        while wanted not in screen:
            message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(message, bytes):
                screen += message
    return screen


def _wait_for_the_demo_ports(within: float = 30.0) -> None:
    """The demo's first BMC and SSH ports free (a demo just stopped lets go of them), or skip."""
    deadline = time.monotonic() + within
    while not (
        _free(socket.SOCK_DGRAM, FIRST_BMC_PORT) and _free(socket.SOCK_STREAM, FIRST_SSH_PORT)
    ):
        if time.monotonic() > deadline:
            pytest.skip("the demo's simulator ports are in use: another `rackhand serve --demo`?")
        time.sleep(0.5)


def _free(kind: socket.SocketKind, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
