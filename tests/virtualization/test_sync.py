"""Guest sync through the API: the catalogue follows what the host lists, keyed by UUID.

The built-in agent drives the fake driver here (the sync's rules, not a host's); the drivers
against a real libvirt and the xl simulator are tested in tests/agents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.drivers.base import Unreachable
from agents.drivers.fake import FakeDriver
from agents.protocol import Dialect, Guest, HostPath, Hypervisor, PowerState, SshTarget
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, error, ok, path, site

UUID_A = "0b6f1e1c-5a4e-4a8e-9d6b-1f2a3b4c5d01"
UUID_B = "0b6f1e1c-5a4e-4a8e-9d6b-1f2a3b4c5d02"
UUID_C = "0b6f1e1c-5a4e-4a8e-9d6b-1f2a3b4c5d03"


def guest(uuid: str, name: str, state: str = "running", **facts: Any) -> Guest:
    power = PowerState.ON if state == "running" else PowerState.OFF
    return Guest(uuid, name, state, power, facts.get("vcpus", 1), facts.get("memory_mib", 64),
                 facts.get("autostart", False))  # fmt: skip


@pytest.fixture
def fake() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def hv(settings: Settings, fake: FakeDriver) -> Iterator[TestClient]:
    """Admin client; site bj-dc1 with hypervisors kvm01 and kvm02 (libvirt over ssh)."""
    quiet = settings.model_copy(update={"poll_power": False})
    app = create_app(quiet, drivers={"libvirt": fake})
    with TestClient(app, raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        for n in (1, 2):
            device(client, f"kvm0{n}", kind="hypervisor")
            path(client, f"kvm0{n}", kind="ssh", address=f"10.0.1.{n}", username="root",
                 secret="pw", options={"hypervisor": "libvirt"})  # fmt: skip
        yield client


def host(fake: FakeDriver, n: int, *guests: Guest) -> None:
    fake.hosts[f"10.0.1.{n}:22"] = list(guests)


def sync(client: TestClient, hypervisor: str = "kvm01", **params: Any) -> Any:
    return ok(client.post(f"devices/{hypervisor}/sync", params=params))


def by_device(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {change["device"]: change for change in result["guests"]}


def test_a_sync_creates_a_vm_per_domain_with_its_facts_path_and_power(
    hv: TestClient, fake: FakeDriver
) -> None:
    host(fake, 1, guest(UUID_A, "vps-1", vcpus=2, memory_mib=2048, autostart=True),
         guest(UUID_B, "vps-2", "shut off"))  # fmt: skip
    result = sync(hv)
    assert (result["listed"], result["created"], result["dry_run"]) == (2, 2, False)
    vm = ok(hv.get("devices/vps-1"))
    assert (vm["kind"], vm["parent"], vm["site"]) == ("vm", "kvm01", "bj-dc1")
    assert vm["power_state"] == "on"
    assert ok(hv.get("devices/vps-2"))["power_state"] == "off"
    [libvirt] = ok(hv.get("devices/vps-1/paths"))
    assert (libvirt["kind"], libvirt["via"], libvirt["domain"]) == ("libvirt", "kvm01", UUID_A)
    guests = {g["device"]: g for g in ok(hv.get("devices/kvm01/guests"))}
    assert guests["vps-1"] | {"seen_at": None} == {
        "device": "vps-1", "uuid": UUID_A, "domain": "vps-1", "state": "running", "vcpus": 2,
        "memory_mib": 2048, "autostart": True, "host": "kvm01", "seen_at": None, "gone_at": None,
    }  # fmt: skip
    events = ok(hv.get("audit", params={"type": "guest.created"}))["items"]
    assert sorted(e["target_name"] for e in events) == ["vps-1", "vps-2"]
    [synced] = ok(hv.get("audit", params={"type": "hypervisor.synced"}))["items"]
    assert synced["details"]["created"] == 2


def test_a_hosts_periodic_sync_runs_at_its_interval_as_the_system(
    hv: TestClient, fake: FakeDriver
) -> None:
    host(fake, 1, guest(UUID_A, "vps-1"))
    host(fake, 2, guest(UUID_B, "vps-2"))
    [ssh] = ok(hv.get("devices/kvm01/paths"))
    ok(hv.patch(f"devices/kvm01/paths/{ssh['id']}", json={"options": {
        "hypervisor": "libvirt", "sync_minutes": 15}}))  # fmt: skip
    syncer = hv.app.state.guest_syncer  # type: ignore[attr-defined]
    assert hv.portal.call(syncer.sync_due) == 1  # type: ignore[union-attr]
    assert hv.portal.call(syncer.sync_due) == 0  # type: ignore[union-attr]  # not due again yet
    assert ok(hv.get("devices/vps-1/guest"))["host"] == "kvm01"
    error(hv.get("devices/vps-2"), 404)  # kvm02 did not ask for it
    [synced] = ok(hv.get("audit", params={"type": "hypervisor.synced"}))["items"]
    assert synced["actor_kind"] == "system"


def test_a_host_claiming_another_sites_guest_does_not_pull_it_over(
    hv: TestClient, fake: FakeDriver
) -> None:
    """A branch host (taken over, or with a copied UUID) lists a data-center guest's UUID:
    neither its periodic sync nor its branch operator moves the guest, or its orders, there."""
    host(fake, 1, guest(UUID_A, "vps-1"))
    sync(hv)
    site(hv, "sh-br12")
    device(hv, "kvm-br", kind="hypervisor", site="sh-br12")
    path(hv, "kvm-br", kind="ssh", address="10.9.0.1", username="root", secret="pw",
         options={"hypervisor": "libvirt", "sync_minutes": 5})  # fmt: skip
    fake.hosts["10.9.0.1:22"] = [guest(UUID_A, "vps-1")]
    syncer = hv.app.state.guest_syncer  # type: ignore[attr-defined]
    assert hv.portal.call(syncer.sync_due) == 1  # type: ignore[union-attr]
    body = {"username": "br-op", "password": "a-password-123",
            "grants": [{"role": "operator", "sites": ["sh-br12"]}]}  # fmt: skip
    ok(hv.post("users", json=body), 201)
    admin = hv.headers["Authorization"]
    hv.headers["Authorization"] = f"Bearer {login(hv, 'br-op', 'a-password-123')}"
    [claimed] = sync(hv, "kvm-br")["guests"]
    assert (claimed["action"], claimed["device"]) == ("skipped", "?")  # nor its name shown
    assert "vps-1" not in claimed["message"]
    hv.headers["Authorization"] = admin
    vm = ok(hv.get("devices/vps-1"))
    assert (vm["site"], vm["parent"]) == ("bj-dc1", "kvm01")
    assert ok(hv.get("devices/vps-1/paths"))[0]["via"] == "kvm01"


def test_a_dry_run_says_what_would_change_and_changes_nothing(
    hv: TestClient, fake: FakeDriver
) -> None:
    host(fake, 1, guest(UUID_A, "vps-1"))
    result = sync(hv, dry_run="true")
    assert (result["dry_run"], result["created"]) == (True, 1)
    assert by_device(result)["vps-1"]["changes"]["state"] == [None, "running"]
    error(hv.get("devices/vps-1"), 404)
    assert ok(hv.get("audit", params={"type": "guest.created"}))["items"] == []


def test_changes_renames_and_gone_guests_are_followed_by_uuid(
    hv: TestClient, fake: FakeDriver
) -> None:
    host(fake, 1, guest(UUID_A, "vps-1"), guest(UUID_B, "vps-2"))
    sync(hv)
    assert sync(hv)["unchanged"] == 2
    host(fake, 1, guest(UUID_A, "vps-1", "shut off", memory_mib=128), guest(UUID_B, "web-2"))
    changes = by_device(sync(hv))
    assert changes["vps-1"]["changes"] == {
        "state": ["running", "shut off"], "memory_mib": [64, 128],
    }  # fmt: skip
    assert changes["web-2"]["changes"]["name"] == ["vps-2", "web-2"]  # it followed its domain
    assert ok(hv.get("devices/vps-1"))["power_state"] == "off"

    host(fake, 1, guest(UUID_B, "web-2"))
    gone = by_device(sync(hv))["vps-1"]
    assert gone["action"] == "gone"
    vm = ok(hv.get("devices/vps-1"))  # kept, with its history
    assert vm["power_state"] == "unknown"
    assert ok(hv.get("devices/kvm01/guests"))[-1]["gone_at"] is not None
    host(fake, 1, guest(UUID_A, "vps-1"), guest(UUID_B, "web-2"))
    assert by_device(sync(hv))["vps-1"]["action"] == "updated"  # back
    assert ok(hv.get("devices/kvm01/guests"))[0]["gone_at"] is None


def test_a_guest_that_migrated_keeps_its_device_and_moves_to_its_new_host(
    hv: TestClient, fake: FakeDriver
) -> None:
    host(fake, 1, guest(UUID_A, "vps-1"))
    sync(hv)
    host(fake, 1)
    host(fake, 2, guest(UUID_A, "vps-1"))
    moved = by_device(sync(hv, "kvm02"))["vps-1"]
    assert moved["changes"]["host"] == ["kvm01", "kvm02"]
    assert ok(hv.get("devices/vps-1"))["parent"] == "kvm02"
    assert ok(hv.get("devices/vps-1/paths"))[0]["via"] == "kvm02"
    assert sync(hv, "kvm01")["gone"] == 0  # no longer kvm01's guest: not gone from there
    assert [g["device"] for g in ok(hv.get("devices/kvm02/guests"))] == ["vps-1"]


def test_a_taken_name_gets_the_hosts_then_the_uuids(hv: TestClient, fake: FakeDriver) -> None:
    device(hv, "web01")
    device(hv, "web01.kvm02")
    host(fake, 1, guest(UUID_A, "web01"))
    host(fake, 2, guest(UUID_B, "web01"), guest(UUID_C, "bad name/!"))
    assert by_device(sync(hv))["web01.kvm01"]["action"] == "created"
    created = by_device(sync(hv, "kvm02"))
    assert set(created) == {"web01-0b6f1e1c", "bad-name"}


def test_a_hand_written_libvirt_path_is_adopted(hv: TestClient, fake: FakeDriver) -> None:
    device(hv, "legacy-vm", kind="vm", parent="kvm01")
    path(hv, "legacy-vm", kind="libvirt", via="kvm01", domain=UUID_A)
    host(fake, 1, guest(UUID_A, "vps-1"))
    adopted = by_device(sync(hv))["legacy-vm"]
    assert adopted["changes"]["guest"] == [None, "adopted"]
    assert ok(hv.get("devices/legacy-vm"))["parent"] == "kvm01"


def test_a_path_edited_to_another_domain_is_skipped_not_a_conflict(
    hv: TestClient, fake: FakeDriver
) -> None:
    host(fake, 1, guest(UUID_A, "vps-1"))
    sync(hv)
    [libvirt] = ok(hv.get("devices/vps-1/paths"))
    ok(hv.patch(f"devices/vps-1/paths/{libvirt['id']}", json={"domain": UUID_B}))
    host(fake, 1, guest(UUID_A, "vps-1"), guest(UUID_B, "vps-2"))
    changes = by_device(sync(hv))
    assert changes["vps-1"]["action"] in ("skipped", "updated"), changes
    skipped = [c for c in changes.values() if c["action"] == "skipped"]
    assert [c["uuid"] for c in skipped] == [UUID_B]
    assert "fix the path's domain" in skipped[0]["message"]


def test_what_cannot_be_synced_says_why(hv: TestClient, fake: FakeDriver) -> None:
    device(hv, "web01")
    assert "not a hypervisor" in error(hv.post("devices/web01/sync"), 422)
    device(hv, "xen01", kind="hypervisor")
    assert "no ssh control path with a hypervisor option" in error(
        hv.post("devices/xen01/sync"), 422
    )
    kvm01 = HostPath(SshTarget("10.0.1.1", "root", "pw", Dialect.SHELL), Hypervisor.LIBVIRT)
    fake.machine(kvm01).fail = Unreachable("hypervisor 10.0.1.1:22 is unreachable")
    detail = error(hv.post("devices/kvm01/sync"), 502)
    assert "could not be listed (failed)" in detail
    assert "unreachable" in detail
    assert ok(hv.get("devices/kvm01/guests")) == []


def test_an_operator_of_one_site_cannot_sync_or_see_another_sites_host(
    hv: TestClient, fake: FakeDriver
) -> None:
    site(hv, "sh-br12")
    device(hv, "kvm-br", kind="hypervisor", site="sh-br12")
    for role, username in (("operator", "br-op"), ("viewer", "bj-viewer")):
        where = "sh-br12" if role == "operator" else "bj-dc1"
        body = {"username": username, "password": "a-password-123",
                "grants": [{"role": role, "sites": [where]}]}  # fmt: skip
        ok(hv.post("users", json=body), 201)
    admin = hv.headers["Authorization"]
    hv.headers["Authorization"] = f"Bearer {login(hv, 'br-op', 'a-password-123')}"
    error(hv.post("devices/kvm01/sync"), 404)  # another site's host looks missing
    error(hv.get("devices/kvm01/guests"), 404)
    hv.headers["Authorization"] = f"Bearer {login(hv, 'bj-viewer', 'a-password-123')}"
    assert "operator" in error(hv.post("devices/kvm01/sync"), 403)
    hv.headers["Authorization"] = admin
    assert len(ok(hv.get("audit", params={"type": "access.denied"}))["items"]) >= 2


def test_a_synced_guest_is_powered_through_its_host(hv: TestClient, fake: FakeDriver) -> None:
    host(fake, 1, guest(UUID_A, "vps-1", "shut off"))
    sync(hv)
    done = ok(hv.post("devices/vps-1/power", json={"action": "on"}))
    assert (done["status"], done["path"], done["power_state"]) == ("succeeded", "libvirt", "on")
    machine = fake.machines[f"10.0.1.1:22/{UUID_A}"]
    assert machine.actions == ["on"]
