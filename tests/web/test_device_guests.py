"""A hypervisor's page lists its guests (gone ones last, marked so) with the sync control for
operators only; a vm's page says what its host last said of it; another site's hypervisor and
its guest list are the 404 of a missing device."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from agents.drivers.fake import FakeDriver
from agents.protocol import Guest, PowerState
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, site
from tests.web.live import PEOPLE, PEOPLE_PASSWORD

PAGE = "http://testserver"
UUID_A = "0b6f1e1c-5a4e-4a8e-9d6b-1f2a3b4c5d01"
UUID_B = "0b6f1e1c-5a4e-4a8e-9d6b-1f2a3b4c5d02"


@pytest.fixture
def fake() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def hv(settings: Settings, fake: FakeDriver) -> Iterator[TestClient]:
    """Admin client; bj-dc1: hypervisor kvm01 (libvirt over ssh, 10.0.1.1) with vps-1 (2 vCPUs,
    2 GiB, autostart, running) and vps-2 (shut off) synced, and kvm02 never synced."""
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(
        create_app(quiet, drivers={"libvirt": fake}), raise_server_exceptions=False
    ) as c:
        c.base_url = c.base_url.join("/api/v1/")
        c.headers["Authorization"] = f"Bearer {login(c, 'admin', ADMIN_PASSWORD)}"
        site(c, "bj-dc1", name="Beijing DC1")
        site(c, "sh-br12", name="Shanghai branch 12", kind="branch")
        for n in (1, 2):
            device(c, f"kvm0{n}", kind="hypervisor")
            path(c, f"kvm0{n}", kind="ssh", address=f"10.0.1.{n}", username="root", secret="pw",
                 options={"hypervisor": "libvirt"})  # fmt: skip
        fake.hosts["10.0.1.1:22"] = [
            Guest(UUID_A, "vps-1", "running", PowerState.ON, 2, 2048, True),
            Guest(UUID_B, "vps-2", "shut off", PowerState.OFF, 1, 512, False),
        ]
        ok(c.post("devices/kvm01/sync"))
        for username, grants in PEOPLE.items():
            body = {"username": username, "password": PEOPLE_PASSWORD, "grants": grants}
            ok(c.post("users", json=body), 201)
        yield c


def _as(client: TestClient, username: str, url: str) -> tuple[int, str]:
    password = ADMIN_PASSWORD if username == "admin" else PEOPLE_PASSWORD
    ok(client.post("auth/login", json={"username": username, "password": password}))
    response = client.get(f"{PAGE}{url}")
    return response.status_code, response.text


def _row(html: str, guest: str) -> str:
    return html.split(f'data-guest="{guest}"')[1].split("</tr>")[0]


def test_a_hypervisors_page_lists_its_guests(hv: TestClient) -> None:
    status, html = _as(hv, "vera", "/devices/kvm01")
    assert status == 200
    section = html.split('id="guests"')[1].split("</section>")[0]
    assert 'Guests <small class="muted" data-guest-count>(2)</small>' in section
    vps1 = _row(section, "vps-1")
    assert 'href="/devices/vps-1"' in vps1
    for cell in ("<td>vps-1</td>", "<td>running</td>", "<td>2</td>", "<td>2 GiB</td>",
                 "<td>yes</td>", '<span class="state state-on">on</span>'):  # fmt: skip
        assert cell in vps1
    vps2 = _row(section, "vps-2")
    for cell in ("<td>shut off</td>", "<td>512 MiB</td>", "<td>no</td>", "state-off"):
        assert cell in vps2
    assert "<time datetime=" in vps2  # last seen


def test_gone_guests_are_marked_with_since_when_and_listed_last(
    hv: TestClient, fake: FakeDriver
) -> None:
    fake.hosts["10.0.1.1:22"] = [Guest(UUID_B, "vps-2", "running", PowerState.ON, 1, 512, False)]
    ok(hv.post("devices/kvm01/sync"))
    _, html = _as(hv, "vera", "/devices/kvm01")
    assert "data-guest-count>(1, 1 gone)</small>" in html
    assert html.index('data-guest="vps-2"') < html.index('data-guest="vps-1"')
    gone = _row(html, "vps-1")
    assert 'class="gone"' in gone
    assert '<span class="state state-failed">gone</span> since <time datetime=' in gone
    assert "state-unknown" in gone  # its power is no longer known
    _, vm = _as(hv, "vera", "/devices/vps-1")
    assert "gone</span> since <time" in vm.split('id="guest-h"')[1].split("</section>")[0]


def test_only_operators_get_the_sync_control(hv: TestClient) -> None:
    _, seen = _as(hv, "vera", "/devices/kvm01")
    assert "data-sync" not in seen
    assert "device.js" not in seen
    _, operated = _as(hv, "olga", "/devices/kvm01")
    section = operated.split('id="guests"')[1].split("</section>")[0]
    assert '<button type="button" class="small" data-sync>Sync guests</button>' in section
    assert 'id="sync-result"' in section
    assert "device.js" in operated


def test_a_hypervisor_never_synced_says_so_with_the_way_to_sync(hv: TestClient) -> None:
    _, seen = _as(hv, "vera", "/devices/kvm02")
    assert "data-guest-count>(0)</small>" in seen
    empty = seen.split("data-no-guests>")[1].split("</p>")[0]
    assert "No guests synced yet" in empty
    assert "POST /api/v1/devices/kvm02/sync" in empty
    _, operated = _as(hv, "olga", "/devices/kvm02")
    empty = operated.split("data-no-guests>")[1].split("</p>")[0]
    assert "No guests synced yet" in empty
    assert "<strong>Sync guests</strong>" in empty
    _, server = _as(hv, "olga", "/devices/vps-1")
    assert 'id="guests"' not in server  # only hypervisors have guests


def test_a_vms_page_shows_its_host_and_guest_facts(hv: TestClient) -> None:
    status, html = _as(hv, "vera", "/devices/vps-1")
    assert status == 200
    facts = html.split('id="guest-h"')[1].split("</section>")[0]
    assert '<dt>Host</dt><dd><a href="/devices/kvm01">kvm01</a></dd>' in facts
    assert "<dt>Domain</dt><dd>vps-1</dd>" in facts
    assert f"<code>{UUID_A}</code>" in facts
    assert "<dt>State</dt><dd data-guest-state>running</dd>" in facts
    assert "<dt>vCPUs</dt><dd>2</dd>" in facts
    assert "<dt>Memory</dt><dd>2 GiB</dd>" in facts
    assert "<dt>Autostart</dt><dd>yes</dd>" in facts
    assert "<dt>Last seen</dt><dd><time datetime=" in facts
    # Its libvirt path is there, and an operator gets power, boot and console through it.
    assert 'data-path="libvirt"' in html
    assert 'via <a href="/devices/kvm01">kvm01</a>' in html
    _, operated = _as(hv, "olga", "/devices/vps-1")
    for action in ("status", "on", "off", "cycle"):
        assert f'data-power="{action}"' in operated
    assert 'data-boot="pxe"' in operated
    assert "data-console" in operated


def test_a_vm_no_sync_listed_says_where_its_facts_come_from(hv: TestClient) -> None:
    device(hv, "vm-by-hand", kind="vm", parent="kvm02")
    _, html = _as(hv, "vera", "/devices/vm-by-hand")
    assert 'id="guest-h"' not in html
    assert "No sync of a hypervisor has listed vm-by-hand yet" in html


def test_the_guest_list_alone_is_what_a_sync_swaps_in(hv: TestClient) -> None:
    status, part = _as(hv, "olga", "/devices/kvm01/guests")
    assert status == 200
    assert "<html" not in part
    assert part.count('id="guests-h"') == 1  # the section's content, for its innerHTML
    assert "<section" not in part
    assert 'data-guest="vps-1"' in part
    assert "data-sync" in part
    _, seen = _as(hv, "vera", "/devices/kvm01/guests")
    assert "data-sync" not in seen


def test_another_sites_hypervisor_is_a_404_like_a_missing_one(hv: TestClient) -> None:
    for url in ("/devices/kvm01", "/devices/kvm01/guests", "/devices/vps-1"):
        status, hidden = _as(hv, "sam", url)
        missing_status, missing = _as(
            hv, "sam", url.replace("kvm01", "kvm99").replace("vps-1", "kvm99")
        )
        assert status == missing_status == 404
        name = "vps-1" if "vps-1" in url else "kvm01"
        assert hidden.replace(name, "kvm99") == missing
    assert "vps-1" not in _as(hv, "sam", "/devices/kvm01/guests")[1]


def test_the_device_list_says_a_vms_host_where_a_rack_would_be(hv: TestClient) -> None:
    _, html = _as(hv, "vera", "/devices?kind=vm")
    row = html.split('href="/devices/vps-1"')[1].split("</tr>")[0]
    assert '<span class="muted">on</span> <a href="/devices/kvm01" data-host>kvm01</a>' in row
