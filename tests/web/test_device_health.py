"""Hardware health on the dashboard: a device's page shows its stored verdict and reads its
sensors, event log and FRU inventory on demand (htmx fragments calling the API's own reads);
a failed read says the API's message in its part; the list filters and shows health, and the
overview counts it. The BMC is the fake driver's (its sensors, log and FRUs in memory)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from agents.drivers.base import Unreachable
from agents.drivers.fake import FakeDriver, FakeMachine
from agents.protocol import (
    Fru,
    FruArea,
    Health,
    LogEvent,
    Sensor,
    SensorState,
    Thresholds,
)
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, site
from tests.web.live import PEOPLE, PEOPLE_PASSWORD

PAGE = "http://testserver"
SENSORS = [
    Sensor("CPU Temp", "Temperature", SensorState.OK, 45.0, "°C",
           thresholds=Thresholds(upper_non_critical=80, upper_critical=90)),
    Sensor("Fan2", "Fan", SensorState.CRITICAL, 0.0, "RPM",
           thresholds=Thresholds(lower_critical=500, lower_non_critical=1000)),
    Sensor("PSU1 Status", "Power Supply", SensorState.OK, states=("Presence detected",)),
    Sensor("DIMM B1", "Memory", SensorState.NOT_PRESENT),
]  # fmt: skip
EVENTS = [  # newest first, as a BMC's log is read
    LogEvent("0002", "2026-12-06T10:05:00+00:00", Health.CRITICAL, "Lower Critical going low",
             "Fan2", "Fan"),
    LogEvent("0001", None, Health.OK, "Log area reset/cleared", "SEL", "Event Logging Disabled",
             asserted=False),
]  # fmt: skip
FRUS = [
    Fru(0, "Builtin FRU",
        board=FruArea(manufacturer="Acme", name="X11DPi", serial_number="B-123"),
        product=FruArea(manufacturer="Acme", name="R640", serial_number="P-456")),
]  # fmt: skip
REASON = "Fan2 critical: 0 RPM (lower critical 500 RPM)"


@pytest.fixture
def bmc() -> FakeMachine:
    return FakeMachine(sensors=list(SENSORS), events=list(reversed(EVENTS)), inventory=list(FRUS))


@pytest.fixture
def rack(settings: Settings, bmc: FakeMachine) -> Iterator[TestClient]:
    """Admin client; bj-dc1: node1 (ipmi 10.0.0.1, the fake BMC), node2 (ipmi 10.0.0.2, healthy)
    and pdu1 (no BMC path); sh-br12: db1; olga operates, vera views bj-dc1, sam sh-br12."""
    fake = FakeDriver()
    fake.machines["10.0.0.1:623"] = bmc
    fake.machines["10.0.0.2:623"] = FakeMachine(sensors=[SENSORS[0]])
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet, drivers={"ipmi": fake}), raise_server_exceptions=False) as c:
        c.base_url = c.base_url.join("/api/v1/")
        c.headers["Authorization"] = f"Bearer {login(c, 'admin', ADMIN_PASSWORD)}"
        site(c, "bj-dc1", name="Beijing DC1")
        site(c, "sh-br12", name="Shanghai branch 12", kind="branch")
        for n in (1, 2):
            device(c, f"node{n}")
            path(c, f"node{n}", kind="ipmi", address=f"10.0.0.{n}", username="u", secret="pw")
        device(c, "pdu1", kind="pdu")
        device(c, "db1", site="sh-br12")
        for username, grants in PEOPLE.items():
            body = {"username": username, "password": PEOPLE_PASSWORD, "grants": grants}
            ok(c.post("users", json=body), 201)
        yield c


def _as(client: TestClient, username: str, url: str) -> tuple[int, str]:
    password = ADMIN_PASSWORD if username == "admin" else PEOPLE_PASSWORD
    ok(client.post("auth/login", json={"username": username, "password": password}))
    response = client.get(f"{PAGE}{url}")
    return response.status_code, response.text


def _section(html: str) -> str:
    return html.split('id="health"')[1].split("</section>")[0]


def _row(html: str, marker: str) -> str:
    return html.split(marker)[1].split("</tr>")[0]


def test_a_device_with_a_bmc_shows_its_verdict_and_the_reads(rack: TestClient) -> None:
    status, html = _as(rack, "vera", "/devices/node1")
    assert status == 200
    section = _section(html)
    assert '<span class="verdict verdict-unknown" data-verdict>unknown</span>' in section
    assert "never checked" in section
    assert "never read: no health poll or sensor read has reached its BMC yet" in section
    for part, label in (("sensors", "Read sensors"), ("events", "Read event log"),
                        ("inventory", "Read inventory")):  # fmt: skip
        assert f'hx-get="/devices/node1/{part}"' in section
        assert f">{label}</button>" in section
    assert "device_health.js" not in html  # a viewer changes nothing
    _, operated = _as(rack, "olga", "/devices/node1")
    assert "device_health.js" in operated
    assert 'id="confirm"' in operated  # the clear's question, with ticket and reason


def test_a_device_without_a_bmc_path_says_so(rack: TestClient) -> None:
    _, html = _as(rack, "olga", "/devices/pdu1")
    section = _section(html)
    assert "No BMC path (ipmi or redfish)" in section
    assert "hx-get" not in section
    assert "device_health.js" not in html
    status, part = _as(rack, "olga", "/devices/pdu1/events")  # asked all the same
    assert status == 200
    assert "pdu1 has no BMC path (ipmi or redfish)" in part.split("data-read-failed>")[1]


def test_reading_sensors_shows_the_table_and_stores_the_verdict(rack: TestClient) -> None:
    status, part = _as(rack, "vera", "/devices/node1/sensors")
    assert status == 200
    assert "<html" not in part
    fan = _row(part, 'data-sensor="Fan2"')
    assert 'data-state="critical"' in fan
    assert "<td>Fan</td>" in fan
    assert "<td>0 RPM</td>" in fan
    assert '<span class="verdict verdict-critical">critical</span>' in fan
    assert '<abbr title="lower critical">LC</abbr> 500' in fan
    assert '<abbr title="lower non-critical">LNC</abbr> 1000' in fan
    cpu = _row(part, 'data-sensor="CPU Temp"')
    assert "<td>45 °C</td>" in cpu
    assert "UNC</abbr> 80" in cpu
    assert "UC</abbr> 90" in cpu
    assert "<td>Presence detected</td>" in _row(part, 'data-sensor="PSU1 Status"')
    assert "not present</span>" in _row(part, 'data-sensor="DIMM B1"')
    assert "4 sensors read <time" in part
    # The verdict the read stored, swapped in beside the page's own.
    verdict = part.split('id="health-verdict"')[1].split("</div>")[0]
    assert 'hx-swap-oob="true"' in verdict
    assert "data-verdict>critical</span>" in verdict
    assert f"<li>{REASON}</li>" in verdict
    assert "checked <time" in verdict
    assert "via ipmi" in verdict
    # The page now shows it as stored, and so do the API and the list.
    _, html = _as(rack, "vera", "/devices/node1")
    assert f"<li>{REASON}</li>" in _section(html)
    assert "critical since <time" in _section(html)
    assert ok(rack.get("devices/node1/health", params={"cached": True}))["health"] == "critical"


def test_a_failed_read_says_the_apis_message_in_its_part(
    rack: TestClient, bmc: FakeMachine
) -> None:
    bmc.fail = Unreachable("10.0.0.1:623: no answer from the BMC")
    said = rack.get("devices/node1/sensors")
    assert said.status_code == 502
    detail = said.json()["detail"]
    for part in ("sensors", "events", "inventory"):
        status, html = _as(rack, "vera", f"/devices/node1/{part}")
        assert status == 200  # htmx swaps it in: the message is the part's content
        failed = html.split("data-read-failed>")[1].split("</p>")[0]
        assert "could not be read (failed)" in failed
        assert "no answer from the BMC" in failed
    _, sensors = _as(rack, "vera", "/devices/node1/sensors")
    assert detail.replace("'", "&#39;") in sensors
    verdict = sensors.split('id="health-verdict"')[1].split("</div>")[0]
    assert "data-verdict>unknown</span>" in verdict
    assert "no answer from the BMC" in verdict  # why it is unknown, as stored


def test_the_event_log_newest_first_with_clear_for_operators(rack: TestClient) -> None:
    status, part = _as(rack, "vera", "/devices/node1/events")
    assert status == 200
    assert part.index('data-event="0002"') < part.index('data-event="0001"')
    newest = _row(part, 'data-event="0002"')
    assert '<time datetime="2026-12-06T10:05:00+00:00" data-local>' in newest
    assert '<span class="verdict verdict-critical">critical</span>' in newest
    assert "Fan2 <small" in newest
    assert "Lower Critical going low" in newest
    oldest = _row(part, 'data-event="0001"')
    assert "no clock set" in oldest
    assert "(deasserted)" in oldest
    assert "2 entries, read <time" in part
    assert "data-clear-events" not in part
    _, operated = _as(rack, "olga", "/devices/node1/events")
    assert ">Clear log</button>" in operated
    assert 'id="clear-result"' in operated


def test_a_cleared_log_reads_empty(rack: TestClient, bmc: FakeMachine) -> None:
    bmc.events.clear()
    _, operated = _as(rack, "olga", "/devices/node1/events")
    assert "data-no-events>The event log is empty.</p>" in operated
    assert "data-clear-events disabled" in operated


def test_inventory_shows_fru_areas_and_the_catalogue_diff_to_admins(rack: TestClient) -> None:
    status, part = _as(rack, "olga", "/devices/node1/inventory")
    assert status == 200
    fru = part.split('data-fru="0"')[1].split("</table>")[0]
    assert "<caption>FRU 0: Builtin FRU</caption>" in fru
    assert '<th scope="col">product</th><th scope="col">board</th>' in fru
    assert "chassis" not in fru  # an area the FRU lacks has no column
    assert '<tr><th scope="row">serial number</th><td>P-456</td><td>B-123</td></tr>' in fru
    assert "part number" not in fru  # a field no area sets has no row
    assert "data-catalogue-diff" not in part  # a catalogue change: admins only
    _, admin = _as(rack, "admin", "/devices/node1/inventory")
    diff = admin.split("data-catalogue-diff>")[1]
    assert '<tr data-change="model"><th scope="row">model</th><td>—</td><td>R640</td></tr>' in diff
    assert ">Copy to catalogue</button>" in diff
    ok(rack.post("devices/node1/inventory/apply"))
    _, copied = _as(rack, "admin", "/devices/node1/inventory")
    assert "data-catalogue-agrees" in copied


def test_another_sites_device_and_its_parts_are_a_404_like_a_missing_one(
    rack: TestClient,
) -> None:
    for part in ("sensors", "events", "inventory"):
        status, hidden = _as(rack, "sam", f"/devices/node1/{part}")
        missing_status, missing = _as(rack, "sam", f"/devices/node9/{part}")
        assert status == missing_status == 404
        assert hidden.replace("node1", "node9") == missing


def test_the_list_shows_and_filters_health_and_the_overview_counts_it(rack: TestClient) -> None:
    ok(rack.get("health"))  # reads both BMCs: node1 critical, node2 ok
    _, html = _as(rack, "vera", "/devices")
    assert '<th scope="col">Health</th>' in html
    assert '<span class="verdict verdict-critical">critical</span>' in _row(
        html, 'href="/devices/node1"'
    )
    assert '<span class="verdict verdict-ok">ok</span>' in _row(html, 'href="/devices/node2"')
    assert '<span class="verdict verdict-unknown">unknown</span>' in _row(
        html, 'href="/devices/pdu1"'
    )
    assert '<option value="critical" >critical</option>' in html
    _, critical = _as(rack, "vera", "/devices?health=critical")
    assert '<option value="critical" selected>critical</option>' in critical
    assert 'href="/devices/node1"' in critical
    assert 'href="/devices/node2"' not in critical
    # "All matching" acts on the search itself, health included (POST /power takes it).
    assert '"health": "critical"' in critical.split('id="bulk-targets">')[1].split("</script>")[0]
    _, unknown = _as(rack, "vera", "/devices?health=unknown")
    assert 'href="/devices/pdu1"' in unknown
    assert 'href="/devices/node1"' not in unknown
    _, wrong = _as(rack, "vera", "/devices?health=bad")
    assert "health: use one of ok, warning, critical, unknown" in wrong
    _, overview = _as(rack, "vera", "/")
    card = overview.split('aria-label="Health at Beijing DC1"')[1].split("</section>")[0]
    for verdict, number in (("critical", 1), ("warning", 0), ("ok", 1), ("unknown", 1)):
        cell = card.split(f'data-health="{verdict}"')[1].split("</div>")[0]
        assert f'href="/devices?site=bj-dc1&amp;health={verdict}"' in cell
        assert f">{number}</a>" in cell
    assert card.index('data-health="critical"') < card.index('data-health="ok"')
