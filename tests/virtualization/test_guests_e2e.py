"""Guests end to end: API → built-in agent → guest driver → SSH → simulated hypervisor hosts.

Two simulated hosts (`python -m sim --hypervisors`): one answers `virsh`, the other Xen's `xl`.
The real drivers sync them, power a guest, set its boot device, and open its serial console,
whose firmware text comes through the API's WebSocket; the simulators say what really ran.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, site
from tests.live import until
from tests.sim.fleet import RunningFleet, launch

pytestmark = pytest.mark.xdist_group("guests-e2e")
HOSTS = {"hv1": "libvirt", "hv2": "xl"}


@pytest.fixture(scope="module")
def hosts() -> Iterator[RunningFleet]:
    fleet = launch(1, "--hypervisors", "2", "--hypervisor-dialect", ",".join(HOSTS.values()),
                   "--hypervisor-guests", "3")  # fmt: skip
    yield fleet
    fleet.stop()


@pytest.fixture
def api(settings: Settings, hosts: RunningFleet) -> Iterator[TestClient]:
    """Hosts hv1 (libvirt) and hv2 (xl) in the catalogue, their keys pinned, guests synced."""
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet), raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        for box in hosts.control.wiring()["devices"]:
            device(client, box["name"], kind="hypervisor")
            path(client, box["name"], kind="ssh", address=box["address"], port=box["port"],
                 username=box["username"], secret=box["password"],
                 options={"hypervisor": box["dialect"], "host_key": box["host_key"]})  # fmt: skip
        yield client


def _guest(hosts: RunningFleet, host: str, guest: str) -> dict[str, Any]:
    answer = hosts.control.request({"op": "guest", "hypervisor": host, "guest": guest})
    return dict(answer["state"])


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_a_host_is_synced_and_its_guest_powered_booted_and_consoled(
    api: TestClient, hosts: RunningFleet, host: str
) -> None:
    result = ok(api.post(f"devices/{host}/sync"))
    assert (result["listed"], result["created"]) == (3, 3)
    guests = {g["device"]: g for g in ok(api.get(f"devices/{host}/guests"))}
    assert set(guests) == {f"{host}-vm01", f"{host}-vm02", f"{host}-vm03"}
    name = f"{host}-vm03"
    running = _guest(hosts, host, name)["domid"] is not None
    assert ok(api.get(f"devices/{name}"))["power_state"] == ("on" if running else "off")
    off = ok(api.post(f"devices/{name}/power", json={"action": "off"}))
    assert (off["status"], off["power_state"]) == ("succeeded", "off")
    assert _guest(hosts, host, name)["domid"] is None

    on = ok(api.post(f"devices/{name}/power", json={"action": "on"}))
    assert (on["status"], on["path"], on["power_state"]) == ("succeeded", "libvirt", "on")
    assert _guest(hosts, host, name)["domid"] is not None  # it really runs on the host

    booted = ok(api.post(f"devices/{name}/boot", json={"device": "pxe"}))
    assert booted["status"] == "succeeded", booted
    console = ok(api.post(f"devices/{name}/consoles", json={"via": "libvirt"}), 201)
    with api.websocket_connect(f"{console['stream']}?mode=rw") as ws:
        cycled = ok(api.post(f"devices/{name}/power", json={"action": "cycle"}))
        assert cycled["status"] == "succeeded", cycled
        seen = b""
        while b"PXE boot" not in seen:  # the firmware boots from the network, on the console
            message = ws.receive()
            assert not message.get("text") or json.loads(message["text"])["type"] != "closed"
            seen += message.get("bytes") or b""
    assert ok(api.get("audit/verify"))["ok"] is True


def test_a_bulk_status_of_every_guest_is_one_job(api: TestClient, hosts: RunningFleet) -> None:
    for host in HOSTS:
        ok(api.post(f"devices/{host}/sync"))
    job = ok(api.post("power", json={"select": "hv1-vm[01-03],hv2-vm[01-03]", "action": "status"}),
             202)  # fmt: skip
    until(lambda: ok(api.get(f"jobs/{job['id']}"))["status"] not in ("queued", "running"),
          "the job's end")  # fmt: skip
    read = ok(api.get(f"jobs/{job['id']}"))
    states = {task["device"]: task["power_state"] for task in read["tasks"]}
    assert read["status"] == "succeeded", read
    running = {
        name: "on" if _guest(hosts, host, name)["domid"] is not None else "off"
        for host in HOSTS
        for name in (f"{host}-vm0{n}" for n in (1, 2, 3))
    }  # as the hosts themselves say
    assert states == running
