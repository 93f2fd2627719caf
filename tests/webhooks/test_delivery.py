"""Deliveries to a real HTTP receiver on 127.0.0.1: signed, retried, never in a job's way."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from agents.drivers.fake import FakeDriver
from app.config import Settings
from tests.factories import ok
from tests.webhooks.conftest import (
    SECRET,
    Received,
    Receiver,
    admin,
    deliveries_until,
    fast,
    seed,
    settled,
    started,
    webhook,
)


def _job(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        job: dict[str, Any] = ok(client.get(f"jobs/{job_id}"))
        if job["status"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def _power(client: TestClient, select: str, action: str = "on", **body: Any) -> dict[str, Any]:
    answer = ok(client.post("power", json={"select": select, "action": action} | body), 202)
    return _job(client, answer["id"])


def _openssl_hmac(secret: str, message: bytes) -> str:
    """The signature as OpenSSL's command line computes it: an independent implementation."""
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", secret],
        input=message,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return out.strip().rsplit(" ", 1)[-1]  # "SHA2-256(stdin)= <hex>" or "(stdin)= <hex>"


def _check_signature(request: Received, secret: str = SECRET) -> None:
    timestamp = request.headers["X-Rackhand-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 300
    signed = timestamp.encode() + b"." + request.body
    header = request.headers["X-Rackhand-Signature"]
    assert header.startswith("sha256=")
    assert _openssl_hmac(secret, signed) == header.removeprefix("sha256=")
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, header)


def test_a_finished_job_is_posted_signed_with_the_job_as_get_returns_it(
    hooked: TestClient, receiver: Receiver
) -> None:
    hook = webhook(hooked, receiver.url, events=["job.finished"])
    job = _power(hooked, "web[01-02]", ticket="INC-42", reason="rack work")
    assert job["status"] == "succeeded"

    [request] = receiver.wait_for(1)
    assert request.path == "/hooks/rackhand"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Rackhand-Event"] == "job.finished"
    _check_signature(request)
    payload = json.loads(request.body)
    assert payload["event"] == "job.finished"
    assert payload["job"] == ok(hooked.get(f"jobs/{job['id']}"))
    assert payload["job"]["ticket"] == "INC-42"
    tasks = payload["job"]["tasks"]
    assert [(t["device"], t["status"], t["power_state"], t["path"]) for t in tasks] == [
        ("web01", "succeeded", "on", "ipmi"),
        ("web02", "succeeded", "on", "ipmi"),
    ]

    [delivery] = deliveries_until(hooked, hook["id"], settled)
    assert request.headers["X-Rackhand-Delivery"] == delivery["id"]
    assert delivery["event"] == "job.finished"
    assert delivery["subject"] == job["id"]
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200
    assert delivery["last_error"] is None
    assert delivery["delivered_at"] is not None


def test_a_receiver_answering_500_gets_the_same_delivery_again(
    hooked: TestClient, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    hook = webhook(hooked, receiver.url)
    _power(hooked, "web01")
    first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert first.headers["X-Rackhand-Delivery"] == second.headers["X-Rackhand-Delivery"]
    _check_signature(second)
    [delivery] = deliveries_until(hooked, hook["id"], settled)
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)
    assert delivery["last_status_code"] == 200


def test_a_dead_receiver_ends_failed_after_every_attempt_and_never_slows_the_job(
    hooked: TestClient, dead_url: str
) -> None:
    hook = webhook(hooked, dead_url, events=["job.finished"])
    answer = ok(hooked.post("devices/web01/power", json={"action": "on", "wait": 10}))
    assert answer["status"] == "succeeded"  # the job's own answer does not wait on webhooks
    [delivery] = deliveries_until(hooked, hook["id"], settled)
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 3  # one attempt and the two retries of `fast`
    assert delivery["last_status_code"] is None
    assert "Connect" in delivery["last_error"]
    assert delivery["next_attempt_at"] is None


def test_a_receiver_that_hangs_holds_no_job_and_times_out(
    settings: Settings, fake: FakeDriver, receiver: Receiver
) -> None:
    receiver.hold = threading.Event()
    with started(
        fast(settings, webhook_timeout_seconds=1.0, webhook_retry_seconds=()), fake
    ) as client:
        admin(client)
        seed(client)
        hook = webhook(client, receiver.url, events=["job.finished"])
        ok(client.post("devices/web01/power", json={"action": "on"}))
        assert receiver.holding.wait(10)  # the receiver now sits on the first delivery...
        second = ok(client.post("devices/web02/power", json={"action": "on"}))
        assert second["status"] == "succeeded"  # ...and the next job finishes regardless
        items = deliveries_until(
            client, hook["id"], lambda items: len(items) == 2 and settled(items)
        )
        assert {item["last_error"] for item in items} == {"no answer within 1 s"}
        assert {item["status"] for item in items} == {"failed"}
        receiver.hold.set()


def test_redeliver_sends_the_same_body_as_a_new_delivery(
    hooked: TestClient, receiver: Receiver
) -> None:
    hook = webhook(hooked, receiver.url)
    _power(hooked, "web01")
    [original] = deliveries_until(hooked, hook["id"], settled)
    again = ok(hooked.post(f"webhooks/{hook['id']}/deliveries/{original['id']}/redeliver"), 202)
    assert again["redelivery_of"] == original["id"]
    assert again["status"] == "pending"
    first, second = receiver.wait_for(2)
    assert second.body == first.body
    assert second.headers["X-Rackhand-Delivery"] == again["id"] != original["id"]
    _check_signature(second)
    items = deliveries_until(hooked, hook["id"], lambda items: len(items) == 2 and settled(items))
    assert items[0]["id"] == again["id"]  # newest first
    assert {item["status"] for item in items} == {"delivered"}
    audit = ok(hooked.get("audit", params={"type": "webhook.redelivered"}))["items"]
    assert audit[0]["details"]["delivery"] == original["id"]
    assert audit[0]["details"]["redelivery"] == again["id"]
    missing = hooked.post(f"webhooks/{hook['id']}/deliveries/nope/redeliver")
    assert missing.status_code == 404


def test_scope_a_webhook_hears_only_of_jobs_wholly_within_its_sites(
    hooked: TestClient, receiver: Receiver
) -> None:
    branch = webhook(hooked, receiver.url + "?who=branch", sites=["sh-br12"])
    dc = webhook(hooked, receiver.url + "?who=dc", sites=["bj-dc1"])
    both = webhook(hooked, receiver.url + "?who=both", sites=["bj-dc1", "sh-br12"])
    everywhere = webhook(hooked, receiver.url + "?who=all")

    dc_job = _power(hooked, "web01")
    deliveries_until(hooked, everywhere["id"], settled)
    assert [d["subject"] for d in deliveries_until(hooked, dc["id"], settled)] == [dc_job["id"]]
    assert len(deliveries_until(hooked, both["id"], settled)) == 1
    # written in the same transaction as the others: none now means none ever
    assert ok(hooked.get(f"webhooks/{branch['id']}/deliveries"))["items"] == []

    mixed = _power(hooked, "web02,br01")
    assert {t["site"] for t in mixed["tasks"]} == {"bj-dc1", "sh-br12"}
    covered = deliveries_until(hooked, both["id"], lambda items: len(items) == 2 and settled(items))
    assert covered[0]["subject"] == mixed["id"]
    assert [d["subject"] for d in ok(hooked.get(f"webhooks/{dc['id']}/deliveries"))["items"]] == [
        dc_job["id"]
    ]
    assert ok(hooked.get(f"webhooks/{branch['id']}/deliveries"))["items"] == []
    deliveries_until(hooked, everywhere["id"], lambda items: len(items) == 2 and settled(items))
    heard = {r.path.split("who=")[1] for r in receiver.wait_for(5)}
    assert heard == {"dc", "both", "all"}


def test_a_closed_console_session_is_posted_with_its_recording_hash(
    hooked: TestClient, receiver: Receiver
) -> None:
    hook = webhook(hooked, receiver.url, events=["console.closed"])
    console = ok(hooked.post("devices/web01/consoles", json={"ticket": "INC-9"}), 201)
    assert console["status"] == "open"
    _power(hooked, "web02")  # a job: not an event this webhook takes
    assert hooked.delete(f"consoles/{console['id']}").status_code == 204
    [request] = receiver.wait_for(1)
    assert request.headers["X-Rackhand-Event"] == "console.closed"
    _check_signature(request)
    sent = json.loads(request.body)["console"]
    closed = ok(hooked.get(f"consoles/{console['id']}"))
    assert sent["id"] == console["id"]
    assert sent["device"] == "web01"
    assert sent["close_reason"] == "closed"
    assert sent["ticket"] == "INC-9"
    assert sent["recording_sha256"] == closed["recording_sha256"] is not None
    assert sent["recording_bytes"] == closed["recording_bytes"]
    [delivery] = deliveries_until(hooked, hook["id"], settled)
    assert delivery["subject"] == console["id"]


def test_deliveries_outlive_a_central_that_stops_before_sending_them(
    settings: Settings, fake: FakeDriver, receiver: Receiver
) -> None:
    asleep = fast(settings, webhook_poll_seconds=3600.0)  # its sender looks once, at the start
    with started(asleep, fake) as client:
        admin(client)
        seed(client)
        hook = webhook(client, receiver.url)
        job = _power(client, "web01")
        [pending] = ok(client.get(f"webhooks/{hook['id']}/deliveries"))["items"]
        assert pending["status"] == "pending"
    assert receiver.requests == []
    with started(fast(settings), fake) as client:
        admin(client)
        [request] = receiver.wait_for(1)
        assert json.loads(request.body)["job"]["id"] == job["id"]
        [delivery] = deliveries_until(client, hook["id"], settled)
        assert delivery["status"] == "delivered"


def test_rotating_the_secret_signs_with_the_new_one(hooked: TestClient, receiver: Receiver) -> None:
    hook = webhook(hooked, receiver.url)
    rotated = "whsec-a-brand-new-secret-value"
    ok(hooked.patch(f"webhooks/{hook['id']}", json={"secret": rotated}))
    _power(hooked, "web01")
    [request] = receiver.wait_for(1)
    _check_signature(request, rotated)


def test_an_inactive_webhook_gets_nothing_and_cannot_be_redelivered(
    hooked: TestClient, receiver: Receiver
) -> None:
    hook = webhook(hooked, receiver.url)
    on = webhook(hooked, receiver.url + "?on")
    _power(hooked, "web01")
    [done] = deliveries_until(hooked, hook["id"], settled)
    ok(hooked.patch(f"webhooks/{hook['id']}", json={"active": False}))
    _power(hooked, "web02")
    deliveries_until(hooked, on["id"], lambda items: len(items) == 2 and settled(items))
    assert len(ok(hooked.get(f"webhooks/{hook['id']}/deliveries"))["items"]) == 1
    refused = hooked.post(f"webhooks/{hook['id']}/deliveries/{done['id']}/redeliver")
    assert refused.status_code == 409
    assert "inactive" in refused.json()["detail"]
