"""Power and boot through the API, jobs and their rules, with the fake driver behind the agent."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx
import orjson
from fastapi.testclient import TestClient
from sqlalchemy import text

from agents.drivers.base import DeviceTimeout, Unreachable
from agents.drivers.fake import FakeDriver, FakeMachine
from agents.protocol import BootDevice, IpmiPath, PowerState
from app.config import Settings
from app.db import make_engine
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, error, ok, path, site

WEB01 = "10.0.0.1:623"


def _job(client: TestClient, job_id: str, until: float = 10) -> dict[str, Any]:
    """The job once it has ended (polling, as a ticketing system would)."""
    deadline = time.monotonic() + until
    while True:
        job: dict[str, Any] = ok(client.get(f"jobs/{job_id}"))
        if job["status"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def _audit(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    items = ok(client.get("audit", params={"limit": 500} | params))["items"]
    return list(reversed(items))


def test_one_device_cycle_answers_with_the_result_and_audits_both_ends(
    fleet: TestClient, fake: FakeDriver
) -> None:
    fake.machine(IpmiPath("10.0.0.1", "u", "p")).power = PowerState.ON
    answer = ok(
        fleet.post(
            "devices/web01/power",
            json={"action": "cycle", "ticket": "INC-1", "reason": "hung at boot"},
        )
    )
    assert answer["device"] == "web01"
    assert answer["status"] == "succeeded"
    assert answer["power_state"] == "on"
    assert answer["path"] == "ipmi"
    assert "cycle done via ipmi 10.0.0.1:623" in answer["message"]
    assert fake.machines[WEB01].actions == ["cycle"]
    events = _audit(fleet, device="web01", type="power.*")
    assert [e["type"] for e in events] == ["power.requested", "power.succeeded"]
    assert all(e["ticket"] == "INC-1" and e["reason"] == "hung at boot" for e in events)
    assert {e["job_id"] for e in events} == {answer["job"]}
    assert "bmc-secret" not in orjson.dumps(events).decode()
    listed = ok(fleet.get("devices", params={"select": "web01"}))["items"][0]
    assert listed["power_state"] == "on"
    assert ok(fleet.get("devices", params={"power_state": "on"}))["items"][0]["name"] == "web01"


def test_boot_to_bios_next_boot_only(fleet: TestClient, fake: FakeDriver) -> None:
    answer = ok(fleet.post("devices/web02/boot", json={"device": "bios"}))
    assert answer["status"] == "succeeded"
    assert "boot device set to bios for the next boot" in answer["message"]
    machine = fake.machines["10.0.0.2:623"]
    assert (machine.boot, machine.persistent) == (BootDevice.BIOS, False)
    ok(fleet.post("devices/web02/boot", json={"device": "pxe", "persistent": True}))
    assert (machine.boot, machine.persistent) == (BootDevice.PXE, True)


def test_bulk_power_is_a_job_with_a_task_per_device(fleet: TestClient, fake: FakeDriver) -> None:
    response = fleet.post("power", json={"select": "web[01-04]", "action": "on", "ticket": "CHG-9"})
    job = ok(response, 202)
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["total"] == 4
    done = _job(fleet, job["id"])
    assert done["status"] == "succeeded"
    assert [t["device"] for t in done["tasks"]] == ["web01", "web02", "web03", "web04"]
    assert {t["power_state"] for t in done["tasks"]} == {"on"}
    assert done["counts"] == {"succeeded": 4}
    assert "10.0.0.5:623" not in fake.machines  # web05 was not selected
    listed = ok(fleet.get("jobs"))["items"]
    assert listed[0]["id"] == job["id"]
    assert listed[0]["tasks"] is None


def test_partial_failure_names_each_device(fleet: TestClient, fake: FakeDriver) -> None:
    fake.machine(_ipmi(3)).fail = Unreachable("BMC 10.0.0.3:623 did not answer")
    job = ok(fleet.post("power", json={"select": "web[01-03]", "action": "status"}), 202)
    done = _job(fleet, job["id"])
    assert done["status"] == "partial"
    failed = [t for t in done["tasks"] if t["status"] != "succeeded"]
    assert [(t["device"], t["status"]) for t in failed] == [("web03", "failed")]
    assert "did not answer" in failed[0]["message"]
    assert failed[0]["attempts"] == 1  # silent through a whole login: not asked again


def test_a_bmc_that_fell_silent_mid_request_is_asked_again(
    fleet: TestClient, fake: FakeDriver
) -> None:
    fake.machine(_ipmi(3)).fail = DeviceTimeout("BMC 10.0.0.3:623 stopped answering")
    job = ok(fleet.post("power", json={"select": "web03", "action": "status"}), 202)
    assert _job(fleet, job["id"])["tasks"][0]["attempts"] == 3  # status is safe to retry


def test_a_cycle_that_may_have_run_is_not_retried(fleet: TestClient, fake: FakeDriver) -> None:
    fake.machine(_ipmi(1)).fail = DeviceTimeout("no reply to the chassis control")
    answer = ok(fleet.post("devices/web01/power", json={"action": "cycle"}))
    assert answer["status"] == "failed"
    job = _job(fleet, answer["job"])
    assert job["tasks"][0]["attempts"] == 1


def test_one_change_per_device_at_a_time(fleet: TestClient, fake: FakeDriver) -> None:
    fake.machine(_ipmi(1)).delay = 1.0
    job = ok(fleet.post("power", json={"select": "web01", "action": "cycle"}), 202)
    detail = error(fleet.post("devices/web01/power", json={"action": "off"}), 409)
    assert f"web01 by job {job['id']} (cycle)" in detail
    status = ok(fleet.post("devices/web01/power", json={"action": "status"}))
    assert status["status"] == "succeeded"  # a status read runs beside it
    assert _job(fleet, job["id"])["status"] == "succeeded"
    ok(fleet.post("devices/web01/power", json={"action": "off"}))  # free again


def test_cancel_stops_unfinished_tasks(fleet: TestClient, fake: FakeDriver) -> None:
    for n in range(1, 6):
        fake.machine(_ipmi(n)).delay = 5.0
    job = ok(fleet.post("power", json={"select": "web[01-05]", "action": "off"}), 202)
    time.sleep(0.1)
    ok(fleet.post(f"jobs/{job['id']}/cancel"))
    done = _job(fleet, job["id"])
    assert done["status"] == "cancelled"
    assert {t["status"] for t in done["tasks"]} == {"cancelled"}
    assert [e["type"] for e in _audit(fleet, type="job.*")] == ["job.cancelled"]


def test_wait_running_out_answers_202_with_the_job(fleet: TestClient, fake: FakeDriver) -> None:
    fake.machine(_ipmi(2)).delay = 0.5
    response = fleet.post("devices/web02/power", json={"action": "on", "wait": 0})
    answer = ok(response, 202)
    assert answer["status"] == "running"
    assert f"GET /api/v1/jobs/{answer['job']}" in answer["message"]
    assert _job(fleet, answer["job"])["status"] == "succeeded"


def test_dry_run_and_guards(fleet: TestClient) -> None:
    device(fleet, "db01")
    dry = ok(
        fleet.post("power", json={"select": "web[01-03],db01", "action": "off", "dry_run": True})
    )
    assert dry == {
        "dry_run": True,
        "action": "off",
        "total": 4,
        "sites": {"bj-dc1": 4},
        "devices": ["db01", "web01", "web02", "web03"],
        "without_power_path": ["db01"],
        "skipped": [],  # named by the node range: it would fail, not be skipped
    }
    assert ok(fleet.get("jobs")) == {"items": [], "next_cursor": None}
    detail = error(
        fleet.post("power", json={"select": "web[01-05]", "action": "off", "max_targets": 3}), 422
    )
    assert "matches 5 devices, more than max_targets 3" in detail
    assert "no device" in error(fleet.post("power", json={"select": "nope", "action": "on"}), 422)
    assert "name the targets" in error(fleet.post("power", json={"action": "on"}), 422)
    detail = error(fleet.post("devices/db01/power", json={"action": "on"}), 422)
    assert "db01 has no power path" in detail
    error(fleet.post("devices/web01/power", json={"action": "explode"}), 422)
    error(fleet.post("devices/nope/power", json={"action": "on"}), 404)


def test_a_device_without_power_path_is_skipped_when_a_filter_picked_it(
    fleet: TestClient, fake: FakeDriver
) -> None:
    """A site-wide status counts the site's PDUs as skipped, not failed: the job succeeds."""
    device(fleet, "pdu-a1", kind="pdu")
    job = ok(fleet.post("power", json={"site": "bj-dc1", "action": "status"}), 202)
    done = _job(fleet, job["id"])
    assert (done["status"], done["counts"]) == ("succeeded", {"succeeded": 5, "skipped": 1})
    pdu = next(t for t in done["tasks"] if t["device"] == "pdu-a1")
    assert pdu["status"] == "skipped"
    assert "no power path" in pdu["message"]
    skipped = _audit(fleet, device="pdu-a1", type="power.*")
    assert [(e["type"], e["outcome"]) for e in skipped] == [("power.skipped", "skipped")]
    assert "10.0.0.9:623" not in fake.machines

    named = ok(fleet.post("power", json={"select": "web01,pdu-a1", "action": "status"}), 202)
    done = _job(fleet, named["id"])
    assert done["status"] == "partial"
    assert next(t for t in done["tasks"] if t["device"] == "pdu-a1")["status"] == "failed"

    detail = error(fleet.post("power", json={"kind": "pdu", "site": "bj-dc1", "action": "on"}), 422)
    assert "none of the 1 devices the filters match has a power path" in detail


def test_idempotency_key_gives_back_the_same_job(fleet: TestClient, fake: FakeDriver) -> None:
    body = {"select": "web[01-02]", "action": "on"}
    headers = {"Idempotency-Key": "chg-42-retry"}
    first = ok(fleet.post("power", json=body, headers=headers), 202)
    again = ok(fleet.post("power", json=body, headers=headers), 202)
    assert again["id"] == first["id"]
    _job(fleet, first["id"])
    assert fake.machines[WEB01].actions == ["on"]
    detail = error(fleet.post("power", json=body | {"action": "off"}, headers=headers), 422)
    assert "Idempotency-Key" in detail


def test_concurrent_retries_with_one_key_get_the_same_job(
    fleet: TestClient, fake: FakeDriver
) -> None:
    """Ten copies of one request sent at once (a client retrying on a timeout) all get the first
    one's job: none sees the unique index or the device lock of the job being written beside it."""
    body = {"select": "web[01-02]", "action": "on"}
    headers = {"Idempotency-Key": "chg-43-storm"} | dict(fleet.headers)

    async def storm() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=fleet.app)
        async with httpx.AsyncClient(transport=transport, base_url=str(fleet.base_url)) as client:
            return await asyncio.gather(
                *(client.post("power", json=body, headers=headers) for _ in range(10))
            )

    answers = fleet.portal.call(storm)  # type: ignore[union-attr]
    assert [answer.status_code for answer in answers] == [202] * 10, [a.text for a in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    _job(fleet, answers[0].json()["id"])
    assert fake.machines[WEB01].actions == ["on"]
    assert len(ok(fleet.get("jobs"))["items"]) == 1
    detail = error(fleet.post("power", json=body | {"action": "off"}, headers=headers), 422)
    assert "Idempotency-Key" in detail


def test_fallback_to_the_next_path_says_which_acted(fleet: TestClient, fake: FakeDriver) -> None:
    path(fleet, "web04", kind="ipmi", priority=20, address="10.9.0.4", username="u", secret="s")
    fake.machine(_ipmi(4)).fail = Unreachable("BMC 10.0.0.4:623 did not answer")
    fake.machine(IpmiPath("10.9.0.4", "u", "s")).power = PowerState.ON
    answer = ok(fleet.post("devices/web04/power", json={"action": "cycle"}))
    assert answer["status"] == "succeeded"
    assert "10.0.0.4:623: BMC 10.0.0.4:623 did not answer" in answer["message"]
    assert "cycle done via ipmi 10.9.0.4:623" in answer["message"]
    assert fake.machines["10.9.0.4:623"].power is PowerState.ON


def test_site_policy_requires_a_ticket_for_destructive_actions(fleet: TestClient) -> None:
    site(fleet, "sh-br12", kind="branch", require_ticket=True)
    device(fleet, "br-web01", site="sh-br12")
    path(fleet, "br-web01", kind="ipmi", address="10.1.0.1", username="u", secret="s")
    assert "requires a ticket" in error(
        fleet.post("devices/br-web01/power", json={"action": "off"}), 422
    )
    ok(fleet.post("devices/br-web01/power", json={"action": "status"}))
    ok(fleet.post("devices/br-web01/power", json={"action": "off", "ticket": "INC-7"}))


def test_job_events_stream_until_the_job_ends(fleet: TestClient, fake: FakeDriver) -> None:
    fake.machine(_ipmi(1)).delay = 1.5  # still running when the stream opens, even when busy
    job = ok(fleet.post("power", json={"select": "web[01-02]", "action": "on"}), 202)
    with fleet.stream("GET", f"jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in stream.iter_lines() if line]
    events = [
        (kind.removeprefix("event: "), orjson.loads(data.removeprefix("data: ")))
        for kind, data in itertools.pairwise(lines)
        if kind.startswith("event: ")
    ]
    first, *progress, last = events
    assert first[0] == "job"
    assert first[1]["id"] == job["id"]
    assert len(first[1]["tasks"]) == 2  # the snapshot: where every task stands now
    assert ("task", "web01", "succeeded") in [(k, d["device"], d["status"]) for k, d in progress]
    assert last == ("job", {"id": job["id"], "status": "succeeded"})


def _ipmi(n: int) -> IpmiPath:
    return IpmiPath(f"10.0.0.{n}", "u", "x")


def test_tasks_of_a_crashed_central_are_lost_not_rerun(
    fleet: TestClient, fake: FakeDriver, settings: Settings
) -> None:
    async def crash_mid_job() -> None:  # what a killed process leaves behind
        engine = make_engine(settings.database_url)
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO job (id, kind, action, persistent, status, targets, total, "
                    "actor_kind, actor_name, created_at) VALUES ('deadbeef', 'power', 'cycle', "
                    "false, 'running', '{}', 1, 'user', 'admin', CURRENT_TIMESTAMP)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO task (job_id, device_id, device_name, site_id, site, exclusive, "
                    "status, message, attempts) SELECT 'deadbeef', id, name, site_id, 'bj-dc1', "
                    "true, 'running', '', 0 FROM device WHERE name = 'web01'"
                )
            )
        await engine.dispose()

    asyncio.run(crash_mid_job())
    # A second central beside the first (which holds its data folder): the task has no owner
    # that is alive, as after a crash.
    second = settings.data_dir / "second"
    quiet = settings.model_copy(update={"poll_power": False, "data_dir": second})
    with TestClient(create_app(quiet, drivers={"ipmi": fake})) as restarted:
        restarted.base_url = fleet.base_url
        restarted.headers["Authorization"] = fleet.headers["Authorization"]
        job = ok(restarted.get("jobs/deadbeef"))
        assert job["status"] == "failed"
        assert job["tasks"][0]["status"] == "lost"
        assert "not re-run" in job["tasks"][0]["message"]
        assert [e["type"] for e in _audit(restarted, type="power.lost")] == ["power.lost"]
        ok(restarted.post("devices/web01/power", json={"action": "off"}))  # the device is free
    assert fake.machines[WEB01].actions == ["off"]


def test_pdu_outlets_claim_ac_only_and_never_stand_in_for_a_bmcs_cycle_or_status(
    settings: Settings, fake: FakeDriver
) -> None:
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet, drivers={"ipmi": fake, "pdu_outlet": fake})) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        device(client, "pdu-a1", kind="pdu")
        path(client, "pdu-a1", kind="ssh", address="10.0.9.1", username="admin", secret="pw",
             options={"dialect": "raritan_px"})  # fmt: skip
        for name, with_bmc in (("web01", True), ("sw01", False)):
            device(client, name)
            if with_bmc:
                path(client, name, kind="ipmi", address="10.0.0.1", username="u", secret="s")
            path(client, name, kind="pdu_outlet", via="pdu-a1", outlets=[1 if with_bmc else 2])
        fake.machine(IpmiPath("10.0.0.1", "u", "s")).fail = Unreachable("BMC 10.0.0.1:623 is dead")
        pdu = fake.machines.setdefault("10.0.9.1:22", FakeMachine(outlets_on={1, 2}))

        cycled = ok(client.post("devices/web01/power", json={"action": "cycle"}))
        assert (cycled["status"], cycled["path"]) == ("failed", None)
        assert "BMC 10.0.0.1:623 is dead" in cycled["message"]
        assert "not used: an outlet cycle cuts AC" in cycled["message"]
        assert pdu.actions == []

        on = ok(client.post("devices/web01/power", json={"action": "on"}))
        assert (on["status"], on["path"], on["power_state"]) == (
            "succeeded",
            "pdu_outlet",
            "unknown",
        )
        assert (
            "outlet 1 already on via pdu_outlet 10.0.9.1:22; nothing was switched" in on["message"]
        )
        assert "the machine's own power state cannot be read" in on["message"]

        status = ok(client.post("devices/web01/power", json={"action": "status"}))
        assert status["status"] == "failed"  # an outlet that is on says nothing of the server
        assert status["path"] is None or status["path"] == "ipmi"
        alone = ok(client.post("devices/sw01/power", json={"action": "status"}))
        assert (alone["path"], alone["power_state"]) == ("pdu_outlet", "unknown")
        assert "outlet 2 on (AC)" in alone["message"]
        cycled = ok(client.post("devices/sw01/power", json={"action": "cycle"}))
        assert (cycled["status"], cycled["path"]) == ("succeeded", "pdu_outlet")  # its own control
        off = ok(client.post("devices/sw01/power", json={"action": "off"}))
        assert off["power_state"] == "off"  # without AC it is off: an outlet knows that much
        assert pdu.actions == ["status", "status", "cycle", "off"]


def test_an_outlet_of_a_pdu_without_ssh_fails_saying_what_is_missing(fleet: TestClient) -> None:
    device(fleet, "pdu-a1", kind="pdu")  # no ssh path: its outlets cannot be switched
    device(fleet, "sw01", kind="network")
    path(fleet, "sw01", kind="pdu_outlet", via="pdu-a1", outlets=[3])
    answer = ok(fleet.post("devices/sw01/power", json={"action": "on"}))
    assert answer["status"] == "failed"
    assert "an outlet of a PDU that has an ssh path" in answer["message"]
