"""Site agents on pages, without a browser: `/admin/agents` lists what `GET /agents` gives each
person (enrol and revoke for a site's admins only), the overview says which sites their agents
serve and how they are, a device page says since when its site's agents are all offline, and
a join token never appears on any page after the API's answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from app.db import utcnow
from app.fleetlink.models import SiteAgent
from app.uow import unit_of_work
from tests.factories import ok
from tests.web.test_audit_page import fleet, page

__all__ = ["fleet"]  # the fixture: bj-dc1 (node1), sh-br12 (br-web01); olga, vera, sam

GONE_AT = datetime(2026, 12, 6, 14, 2, tzinfo=UTC)
SHOWN_GONE_AT = "2026-12-06 14:02:00 UTC"


def _enrol(client: TestClient, site: str, name: str) -> dict[str, Any]:
    body = {"site": site, "name": name}
    return ok(client.post("agents", json=body), 201)  # type: ignore[no-any-return]


def _link(client: TestClient, agent_id: int, **state: Any) -> None:
    """Set an agent's link state as the central holding its link writes it."""

    async def write() -> None:
        async with unit_of_work(client.app.state.write_sessions) as session:  # type: ignore[attr-defined]
            await session.execute(update(SiteAgent).where(SiteAgent.id == agent_id).values(state))

    client.portal.call(write)  # type: ignore[union-attr]


def _online(client: TestClient, agent_id: int) -> None:
    now = utcnow()
    _link(client, agent_id, credential_hash=f"{agent_id:064d}", join_hash=None, joined_at=now,
          version="1.4.0", address="203.0.113.7", central_id="c1",
          connected_since=now - timedelta(hours=1), disconnected_at=None, last_seen=now,
          tasks=2, consoles=1)  # fmt: skip


def _offline(client: TestClient, agent_id: int) -> None:
    _online(client, agent_id)
    _link(client, agent_id, disconnected_at=GONE_AT, last_seen=GONE_AT, tasks=0, consoles=0)


def _row(html: str, agent: str) -> str:
    marker = f'data-agent-row="{agent}"'
    assert marker in html, agent
    return html.split(marker, 1)[1].split("</tr>", 1)[0]


def test_an_admin_sees_every_agent_with_its_link_and_the_join_token_never_again(
    fleet: TestClient,
) -> None:
    token = _enrol(fleet, "sh-br12", "br12-a")["join_token"]
    online = _enrol(fleet, "sh-br12", "br12-b")
    _online(fleet, online["id"])
    gone = _enrol(fleet, "bj-dc1", "dc1-a")
    ok(fleet.delete(f"agents/{gone['id']}"), 204)

    index = page(fleet, "admin", "/admin")
    assert 'href="/admin/agents"' in index.text
    shown = page(fleet, "admin", "/admin/agents")
    assert shown.status_code == 200
    pending = _row(shown.text, "sh-br12/br12-a")
    assert "state-pending" in pending
    assert "never connected" in pending
    assert "join token until" in pending
    assert 'data-revoke-agent="' in pending
    live = _row(shown.text, "sh-br12/br12-b")
    for said in ("state-online", "online</span> since", "1.4.0", "203.0.113.7",
                 "<td>2</td>", "<td>1</td>"):  # fmt: skip
        assert said in live, said
    revoked = _row(shown.text, "bj-dc1/dc1-a")
    assert "revoked</span> at" in revoked
    assert "data-revoke-agent" not in revoked  # nothing left to revoke
    assert "data-enrol-agent" in shown.text
    assert '<option value="bj-dc1"' in shown.text
    assert '<option value="sh-br12"' in shown.text
    assert '<dialog id="confirm"' in shown.text

    for later in ("/admin/agents", "/admin/agents?site=sh-br12", "/", "/devices/br-web01",
                  "/audit", "/audit?type=agent.enrolled", "/admin"):  # fmt: skip
        assert token not in page(fleet, "admin", later).text, later


def test_a_viewer_sees_her_sites_agents_read_only_and_no_other_sites(fleet: TestClient) -> None:
    _enrol(fleet, "bj-dc1", "dc1-a")
    _enrol(fleet, "sh-br12", "br12-a")
    index = page(fleet, "vera", "/admin")
    assert 'href="/admin/agents"' in index.text
    shown = page(fleet, "vera", "/admin/agents")
    assert shown.status_code == 200
    assert 'data-agent-row="bj-dc1/dc1-a"' in shown.text
    assert "br12-a" not in shown.text
    assert "sh-br12" not in shown.text
    for action in ("data-enrol-agent", "data-revoke-agent", "<dialog"):
        assert action not in shown.text, action
    hidden = page(fleet, "vera", "/admin/agents?site=sh-br12")
    assert hidden.status_code == 200  # as GET /agents?site=: an empty list, not a refusal
    assert "br12-a" not in hidden.text
    assert "No agents of sh-br12 among your sites." in hidden.text
    theirs = page(fleet, "sam", "/admin/agents")  # operator at sh-br12
    assert 'data-agent-row="sh-br12/br12-a"' in theirs.text
    assert "dc1-a" not in theirs.text
    assert "data-revoke-agent" not in theirs.text


def test_an_admin_of_one_site_enrols_and_revokes_there_only(fleet: TestClient) -> None:
    ok(fleet.patch("users/sam", json={"grants": [
        {"role": "admin", "sites": ["sh-br12"]}, {"role": "viewer", "sites": ["bj-dc1"]},
    ]}))  # fmt: skip
    _enrol(fleet, "bj-dc1", "dc1-a")
    _enrol(fleet, "sh-br12", "br12-a")
    shown = page(fleet, "sam", "/admin/agents")
    assert '<option value="sh-br12"' in shown.text
    assert '<option value="bj-dc1"' not in shown.text  # the API would refuse: not his to enrol
    assert "data-revoke-agent" in _row(shown.text, "sh-br12/br12-a")
    assert "data-revoke-agent" not in _row(shown.text, "bj-dc1/dc1-a")
    olga = page(fleet, "olga", "/admin/agents")  # operator at bj-dc1: reads only
    assert "data-enrol-agent" not in olga.text
    assert "br12-a" not in olga.text


def test_the_overview_says_which_agents_serve_a_site_and_how_they_are(fleet: TestClient) -> None:
    _online(fleet, _enrol(fleet, "sh-br12", "br12-a")["id"])
    _offline(fleet, _enrol(fleet, "sh-br12", "br12-b")["id"])
    html = page(fleet, "admin", "/").text
    branch = html.split('data-site-agents="sh-br12"', 1)[1].split("</footer>", 1)[0]
    assert 'href="/admin/agents?site=sh-br12"' in branch
    assert 'br12-a <span class="state state-online">online</span>' in branch
    assert 'br12-b <span class="state state-offline">offline</span> since' in branch
    assert SHOWN_GONE_AT in branch
    assert "none online" not in branch
    central = html.split('data-site-agents="bj-dc1"', 1)[1].split("</footer>", 1)[0]
    assert "No site agents: reached from the central." in central
    olga = page(fleet, "olga", "/").text  # operator at bj-dc1 only
    assert "br12-a" not in olga
    assert "sh-br12" not in olga


def test_a_device_page_says_since_when_its_sites_agents_are_offline(fleet: TestClient) -> None:
    first = _enrol(fleet, "sh-br12", "br12-a")
    shown = page(fleet, "sam", "/devices/br-web01").text
    assert "data-agents-down" in shown
    assert "No agent of sh-br12 is online" in shown
    assert "br12-a" in shown
    assert "never connected" in shown
    _offline(fleet, first["id"])
    second = _enrol(fleet, "sh-br12", "br12-b")
    _offline(fleet, second["id"])
    _link(fleet, second["id"], disconnected_at=GONE_AT - timedelta(hours=3))
    shown = page(fleet, "sam", "/devices/br-web01").text
    said = shown.split("data-agents-down", 1)[1].split("</p>", 1)[0]
    assert f'Agent offline since <time datetime="{GONE_AT.isoformat()}"' in said
    assert 'href="/admin/agents?site=sh-br12"' in said
    _online(fleet, second["id"])
    assert "data-agents-down" not in page(fleet, "sam", "/devices/br-web01").text
    assert "data-agents-down" not in page(fleet, "vera", "/devices/node1").text  # no agents
