"""Enrolment, the join trade, revocation and routing through the API (the link itself:
tests/agents/test_site_agent.py). Each refusal is performed as an attacker would."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from agents.drivers.fake import FakeDriver
from agents.protocol import (
    PROTOCOL,
    Hello,
    HostKeySeen,
    PowerAction,
    PowerOrder,
    Report,
    TaskStatus,
    Welcome,
    decode,
    encode,
)
from app.config import Settings
from app.db import utcnow
from app.fleetlink.models import SiteAgent
from app.main import create_app
from app.uow import unit_of_work
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, error, ok, path, site
from tests.live import until


@pytest.fixture
def fleet(settings: Settings) -> Iterator[TestClient]:
    """bj-dc1 (no agent: the built-in one) and sh-br12 (a branch), a server in each."""
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet, drivers={"ipmi": FakeDriver()})) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        site(client, "sh-br12", kind="branch")
        for name, where in (("web01", "bj-dc1"), ("br-web01", "sh-br12")):
            device(client, name, site=where)
            path(client, name, kind="ipmi", address="10.0.0.1", username="u", secret="s")
        yield client


def _token(client: TestClient, role: str, sites: list[str]) -> dict[str, str]:
    made = ok(client.post("tokens", json={"name": f"{role}-x", "role": role, "sites": sites}), 201)
    return {"Authorization": f"Bearer {made['token']}"}


def _enrol(client: TestClient, name: str = "br12-a", **fields: Any) -> dict[str, Any]:
    return ok(client.post("agents", json={"site": "sh-br12", "name": name} | fields), 201)  # type: ignore[no-any-return]


def test_enrolment_shows_the_join_token_once_and_the_site_fails_fast(fleet: TestClient) -> None:
    enrolled = _enrol(fleet)
    assert enrolled["join_token"].startswith("rhj_")
    assert enrolled["join_token"] in enrolled["command"]
    listed = ok(fleet.get("agents"))
    assert [(a["name"], a["status"]) for a in listed] == [("br12-a", "pending")]
    assert enrolled["join_token"] not in fleet.get("agents").text
    assert enrolled["join_token"] not in fleet.get("audit").text
    branch = ok(fleet.post("devices/br-web01/power", json={"action": "status"}))
    assert branch["status"] == "failed"
    assert "br12-a enrolled, never connected" in branch["message"]
    here = ok(fleet.post("devices/web01/power", json={"action": "status"}))
    assert here["status"] == "succeeded"  # a site without agents stays on the built-in one
    opened = fleet.post("devices/br-web01/consoles", json={"via": "ipmi"})
    assert "no agent of site sh-br12 is online" in error(opened, 502)


def test_only_an_admin_of_the_site_enrols_lists_and_revokes(fleet: TestClient) -> None:
    agent = _enrol(fleet)
    operator = _token(fleet, "operator", ["sh-br12"])
    outsider = _token(fleet, "admin", ["bj-dc1"])
    body = {"site": "sh-br12", "name": "br12-b"}
    assert "admin" in error(fleet.post("agents", json=body, headers=operator), 403)
    error(fleet.post("agents", json=body, headers=outsider), 404)  # the site is invisible
    assert ok(fleet.get("agents", headers=outsider)) == []
    error(fleet.get(f"agents/{agent['id']}", headers=outsider), 404)
    error(fleet.delete(f"agents/{agent['id']}", headers=operator), 403)
    error(fleet.delete(f"agents/{agent['id']}", headers=outsider), 404)
    assert ok(fleet.get(f"agents/{agent['id']}", headers=operator))["status"] == "pending"
    error(fleet.post("agents", json={"site": "sh-br12", "name": "br12-a"}), 409)
    error(fleet.post("agents", json={"site": "sh-br12", "name": "Bad Name"}), 422)


def test_a_join_token_works_once_and_buys_a_credential_that_works_nowhere_else(
    fleet: TestClient,
) -> None:
    token = _enrol(fleet)["join_token"]
    joined = ok(
        fleet.post("agents/join", json={"join_token": token}, headers={"Authorization": ""})
    )
    assert joined["credential"].startswith("rha_")
    assert joined["site"] == "sh-br12"
    again = fleet.post("agents/join", json={"join_token": token})
    assert "already used" in error(again, 401)
    stranger = {"Authorization": f"Bearer {joined['credential']}"}
    for where in ("devices", "agents", "audit", "sites"):
        error(fleet.get(where, headers=stranger), 401)
    user_token = fleet.headers["Authorization"].removeprefix("Bearer ")
    error(fleet.post("agents/join", json={"join_token": user_token}), 401)
    assert ok(fleet.get("agents"))[0]["status"] == "offline"
    events = ok(fleet.get("audit", params={"type": "agent.joined"}))["items"]
    assert [event["target_name"] for event in events] == ["sh-br12/br12-a"]
    assert joined["credential"] not in fleet.get("audit").text


def test_an_expired_or_revoked_join_token_is_refused(fleet: TestClient) -> None:
    late = _enrol(fleet, "br12-late")
    revoked = _enrol(fleet, "br12-gone")

    async def expire() -> None:
        async with unit_of_work(fleet.app.state.write_sessions) as session:  # type: ignore[attr-defined]
            await session.execute(
                update(SiteAgent)
                .where(SiteAgent.id == late["id"])
                .values(join_expires_at=utcnow() - timedelta(seconds=1))
            )

    fleet.portal.call(expire)  # type: ignore[union-attr]
    assert "expired at" in error(
        fleet.post("agents/join", json={"join_token": late["join_token"]}), 401
    )
    ok(fleet.delete(f"agents/{revoked['id']}"), 204)
    gone = fleet.post("agents/join", json={"join_token": revoked["join_token"]})
    assert "already used, or revoked" in error(gone, 401)
    states = {a["name"]: a["status"] for a in ok(fleet.get("agents"))}
    assert states == {"br12-gone": "revoked", "br12-late": "pending"}
    branch = ok(fleet.post("devices/br-web01/power", json={"action": "status"}))
    assert "br12-gone revoked at" in branch["message"]  # revoking never hands the site back
    refusals = ok(fleet.get("audit", params={"type": "auth.rejected"}))["items"]
    assert any(event["details"].get("credential") == "join_token" for event in refusals)


def test_a_site_with_agents_keeps_its_slug(fleet: TestClient) -> None:
    _enrol(fleet)
    refused = fleet.patch("sites/sh-br12", json={"slug": "sh-br13"})
    assert "served by its agents (br12-a)" in error(refused, 409)
    assert ok(fleet.patch("sites/sh-br12", json={"name": "Shanghai 12"}))["slug"] == "sh-br12"


def test_an_agent_cannot_pin_a_key_or_report_for_what_it_was_not_sent(fleet: TestClient) -> None:
    """An agent of sh-br12 claims the host key of a box at bj-dc1 with the same address (the
    central never sent it there), then sends an order as if it were the central."""
    device(fleet, "cs-dc1", kind="console_server")
    path(fleet, "cs-dc1", kind="ssh", address="10.0.0.5", port=22, username="u", secret="s",
         options={"dialect": "opengear"})  # fmt: skip
    token = _enrol(fleet)["join_token"]
    credential = ok(fleet.post("agents/join", json={"join_token": token}))["credential"]
    link = {"Authorization": f"Bearer {credential}"}
    with fleet.websocket_connect("/api/v1/agents/link", headers=link) as ws:
        ws.send_bytes(encode(Hello(PROTOCOL, "test", "sh-br12", "br12-a")))
        assert isinstance(decode(ws.receive_bytes()), Welcome)
        ws.send_bytes(encode(HostKeySeen("10.0.0.5", 22, "SHA256:" + "A" * 43)))
        ws.send_bytes(encode(PowerOrder("t1", "web01", "bj-dc1", PowerAction.OFF, ())))
        ws.send_bytes(b"not a message")

        def refused() -> list[dict[str, Any]]:
            audit = ok(fleet.get("audit", params={"type": "agent.message_refused"}))
            return audit["items"]  # type: ignore[no-any-return]

        until(lambda: len(refused()) == 2, "both refusals in the audit")
    whats = sorted(event["details"]["what"] for event in refused())
    assert whats == [
        "a PowerOrder, which goes to agents",
        "a host key of a box it was not asked to reach",
    ]
    ssh = next(p for p in ok(fleet.get("devices/cs-dc1/paths")) if p["kind"] == "ssh")
    assert ssh["options"].get("host_key") is None  # not pinned by another site's agent


def test_a_task_an_agent_started_and_never_ended_is_ended_by_the_central(
    settings: Settings,
) -> None:
    """An agent that keeps its link but never reports a cycle's end cannot hold the job open."""
    quick = settings.model_copy(update={"poll_power": False, "agent_report_grace_seconds": 0.5})
    with TestClient(create_app(quick)) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "sh-br12", kind="branch")
        device(client, "br-web01", site="sh-br12")
        path(client, "br-web01", kind="ipmi", address="10.0.0.1", username="u", secret="s")
        token = _enrol(client)["join_token"]
        credential = ok(client.post("agents/join", json={"join_token": token}))["credential"]
        link = {"Authorization": f"Bearer {credential}"}
        with client.websocket_connect("/api/v1/agents/link", headers=link) as ws:
            ws.send_bytes(encode(Hello(PROTOCOL, "test", "sh-br12", "br12-a")))
            assert isinstance(decode(ws.receive_bytes()), Welcome)
            body = {"action": "cycle", "timeout": 1, "wait": 0}
            job = ok(client.post("devices/br-web01/power", json=body), 202)["job"]
            order = decode(ws.receive_bytes())
            assert isinstance(order, PowerOrder)
            ws.send_bytes(encode(Report(order.task_id, TaskStatus.RUNNING)))
            until(lambda: ok(client.get(f"jobs/{job}"))["status"] != "running", "the job's end", 10)
        task = ok(client.get(f"jobs/{job}"))["tasks"][0]
        assert task["status"] == "lost"
        assert "did not report the end of the task within 1.5 s" in task["message"]
