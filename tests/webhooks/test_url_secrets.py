"""A receiver's token in its URL (`?token=…`) is used to deliver and shown nowhere else."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from tests.factories import error, ok
from tests.webhooks.conftest import Receiver, deliveries_until, settled, webhook

TOKEN = "tok-9f8e7d6c5b4a"


def _power(client: TestClient) -> None:
    ok(client.post("devices/web01/power", json={"action": "on", "wait": 10}))


def _everything_shown(client: TestClient, hook_ids: list[int]) -> str:
    """Every answer an admin can get about webhooks, and the whole audit log."""
    answers = [
        client.get("webhooks"),
        client.get("audit", params={"limit": 1000}),
        client.get("audit/export", params={"format": "jsonl"}),
        client.get("audit/export", params={"format": "csv"}),
    ]
    for hook_id in hook_ids:
        answers += [
            client.get(f"webhooks/{hook_id}"),
            client.get(f"webhooks/{hook_id}/deliveries"),
        ]
    return "\n".join(answer.text for answer in answers)


def test_a_failing_receivers_token_reaches_no_log_error_audit_or_answer(
    hooked: TestClient, receiver: Receiver, dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.statuses = [500, 500, 500]  # every attempt fails, answered (httpx logs the request)
    answering = webhook(hooked, f"{receiver.url}?token={TOKEN}&site=bj", events=["job.finished"])
    dead = webhook(hooked, f"{dead_url}?token={TOKEN}", events=["job.finished"])
    assert answering["url"] == f"{receiver.url}?token=***&site=***"
    assert dead["url"] == f"{dead_url}?token=***"
    _power(hooked)

    failed = deliveries_until(hooked, answering["id"], settled)
    refused = deliveries_until(hooked, dead["id"], settled)
    assert [d["status"] for d in failed + refused] == ["failed", "failed"]
    assert failed[0]["last_error"] == "answered 500"
    assert "Connect" in refused[0]["last_error"]
    assert [r.path for r in receiver.requests] == [f"/hooks/rackhand?token={TOKEN}&site=bj"] * 3

    changed = ok(hooked.patch(f"webhooks/{dead['id']}", json={"url": f"{dead_url}?token=new-1"}))
    assert changed["url"] == f"{dead_url}?token=***"
    shown = _everything_shown(hooked, [answering["id"], dead["id"]])
    assert TOKEN not in shown
    assert "new-1" not in shown
    assert f"{dead_url}?token=***" in shown  # the audit names the webhook by its shown URL
    assert "HTTP Request: POST" in caplog.text  # httpx logged each request, URL redacted
    assert "token=***" in caplog.text
    assert TOKEN not in caplog.text
    updated = ok(hooked.get("audit", params={"type": "webhook.updated"}))["items"][0]
    assert updated["details"]["url_query_changed"] is True  # changed, though it reads the same


def test_a_url_as_shown_back_is_refused_not_stored(hooked: TestClient, receiver: Receiver) -> None:
    hook = webhook(hooked, f"{receiver.url}?token={TOKEN}")
    for url in (hook["url"], f"{receiver.url}?***"):
        detail = error(hooked.patch(f"webhooks/{hook['id']}", json={"url": url}), 422)
        assert "url: a value reads ***, as URLs are shown back; give the real value" in detail
    ok(hooked.patch(f"webhooks/{hook['id']}", json={"active": True}))  # other fields: URL kept
    _power(hooked)
    [request] = receiver.wait_for(1)
    assert request.path == f"/hooks/rackhand?token={TOKEN}"
