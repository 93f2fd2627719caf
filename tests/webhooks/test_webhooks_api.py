"""Managing webhooks: validation, the secret kept out of every answer and the audit, scope."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import login
from tests.factories import error, ok
from tests.webhooks.conftest import SECRET, webhook

RECEIVER = "https://tickets.example.com/hooks/rackhand?token=t0k3n"
SHOWN = "https://tickets.example.com/hooks/rackhand?token=***"


def test_create_read_update_delete_and_the_audit_trail(hooked: TestClient) -> None:
    created = webhook(hooked, RECEIVER, sites=["bj-dc1"], events=["job.finished"])
    assert created["secret"] == "set"
    assert created["sites"] == ["bj-dc1"]
    assert created["events"] == ["job.finished"]
    assert created["active"] is True
    assert created["created_by"] == "admin"
    assert created["url"] == SHOWN
    hook_id = created["id"]
    assert ok(hooked.get(f"webhooks/{hook_id}")) == created
    assert ok(hooked.get("webhooks")) == [created]

    changed = ok(hooked.patch(f"webhooks/{hook_id}", json={
        "secret": "another-secret-0123456789", "sites": None, "events": ["console.closed"],
    }))  # fmt: skip
    assert changed["sites"] is None
    assert changed["events"] == ["console.closed"]
    assert changed["secret"] == "set"
    assert hooked.delete(f"webhooks/{hook_id}").status_code == 204
    error(hooked.get(f"webhooks/{hook_id}"), 404)
    error(hooked.get(f"webhooks/{hook_id}/deliveries"), 404)

    events = ok(hooked.get("audit", params={"type": "webhook.*"}))["items"]
    by_type = {event["type"]: event for event in events}
    assert set(by_type) == {"webhook.created", "webhook.updated", "webhook.deleted"}
    assert by_type["webhook.created"]["site"] == "bj-dc1"
    assert by_type["webhook.created"]["target_name"] == SHOWN
    assert by_type["webhook.updated"]["details"]["secret_rotated"] is True
    assert by_type["webhook.updated"]["details"]["after"]["sites"] is None
    assert by_type["webhook.deleted"]["details"]["before"]["events"] == ["console.closed"]


def test_the_secret_is_never_answered_nor_audited(hooked: TestClient) -> None:
    rotated = "rotated-secret-never-shown-either"
    created = webhook(hooked, RECEIVER)
    answers = [
        hooked.get("webhooks"),
        hooked.get(f"webhooks/{created['id']}"),
        hooked.patch(f"webhooks/{created['id']}", json={"secret": rotated}),
        hooked.get("audit", params={"limit": 500}),
        hooked.get("audit/export", params={"format": "jsonl"}),
        hooked.post("webhooks", json={"url": "ftp://x", "secret": SECRET, "events": ["x"]}),
    ]
    for answer in answers:
        assert SECRET not in answer.text
        assert rotated not in answer.text
        assert "t0k3n" not in answer.text  # the receiver's token in the URL: not even to admins


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://tickets.example.com/hooks", "https://"),
        ("http://tickets.example.com/hooks", "localhost"),
        ("https://user:pw@tickets.example.com/hooks", "user or password"),
        ("https:///hooks", "host"),
        ("tickets.example.com/hooks", "https://"),
        ("javascript:alert(1)", "https://"),
        ("https://tickets.example.com:99999/hooks", "valid URL"),
        ("https://tickets.example.com/hooks#frag", "fragment"),
    ],
)
def test_bad_urls_are_refused_with_a_reason(hooked: TestClient, url: str, words: str) -> None:
    detail = error(
        hooked.post("webhooks", json={"url": url, "secret": SECRET, "events": ["job.finished"]}),
        422,
    )
    assert detail.startswith("url: ")
    assert words in detail


def test_loopback_http_is_allowed_where_the_allow_list_lets_loopback_in(
    hooked: TestClient,
) -> None:
    for url in ("http://localhost:8080/h", "http://127.0.0.1/h", "http://[::1]:9000/h",
                "http://[::ffff:127.0.0.1]/h"):  # fmt: skip
        assert webhook(hooked, url)["url"] == url


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"secret": "short"}, "secret"),
        ({"events": []}, "events"),
        ({"events": ["job.started"]}, "events"),
        ({"sites": ["nowhere"]}, "no site 'nowhere'"),
        ({"sites": []}, "sites"),
    ],
)
def test_other_bad_fields(hooked: TestClient, fields: dict[str, object], words: str) -> None:
    body = {"url": RECEIVER, "secret": SECRET, "events": ["job.finished"]} | fields
    assert words in error(hooked.post("webhooks", json=body), 422)


def test_a_site_admin_manages_the_webhooks_of_their_site_only(hooked: TestClient) -> None:
    password = "site-admin-password"
    grants = [{"role": "admin", "sites": ["sh-br12"]}, {"role": "viewer"}]
    body = {"username": "carol", "password": password, "grants": grants}
    ok(hooked.post("users", json=body), 201)
    everywhere = webhook(hooked, RECEIVER)
    dc = webhook(hooked, RECEIVER, sites=["bj-dc1"])
    token = login(hooked, "carol", password)
    hooked.headers["Authorization"] = f"Bearer {token}"

    mine = webhook(hooked, RECEIVER, sites=["sh-br12"])
    assert ok(hooked.get("webhooks")) == [mine]
    ok(hooked.patch(f"webhooks/{mine['id']}", json={"active": False}))
    assert "admin role" in error(
        hooked.post(
            "webhooks", json={"url": RECEIVER, "secret": SECRET, "events": ["job.finished"]}
        ),
        403,
    )
    error(hooked.patch(f"webhooks/{mine['id']}", json={"sites": ["sh-br12", "bj-dc1"]}), 403)
    for other in (everywhere, dc):
        error(hooked.get(f"webhooks/{other['id']}"), 403)
        error(hooked.delete(f"webhooks/{other['id']}"), 403)
    assert hooked.delete(f"webhooks/{mine['id']}").status_code == 204
    denied = [
        event
        for event in ok(hooked.get("audit", params={"type": "access.denied"}))["items"]
        if event["target_type"] == "webhook"
    ]
    assert denied  # refusals are audited


def test_a_viewer_cannot_list_webhooks(hooked: TestClient) -> None:
    password = "viewer-password-123"
    body = {"username": "vic", "password": password, "grants": [{"role": "viewer"}]}
    ok(hooked.post("users", json=body), 201)
    hooked.headers["Authorization"] = f"Bearer {login(hooked, 'vic', password)}"
    error(hooked.get("webhooks"), 403)
