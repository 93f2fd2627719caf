"""Every token expires within a year; a token made with another never outlives it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from app.config import Settings
from app.db import make_engine, utcnow
from app.identity.models import ApiToken
from tests.factories import error, ok


def _bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['token']}"}


def _mint(client: TestClient, name: str, headers: dict[str, str] | None = None,
          **fields: Any) -> dict[str, Any]:  # fmt: skip
    body = {"name": name, "role": "operator"} | fields
    return dict(ok(client.post("tokens", json=body, headers=headers or {}), 201))


def _when(token: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(token["expires_at"])


async def _expire_in(settings: Settings, token_id: int, delta: timedelta) -> datetime:
    engine = make_engine(settings.database_url)
    moment = utcnow() + delta
    async with engine.begin() as connection:
        await connection.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(expires_at=moment)
        )
    await engine.dispose()
    return moment


def test_a_child_never_outlives_its_parent_and_dies_with_it(
    client: TestClient, settings: Settings
) -> None:
    """The attack: a one-hour token minted a ten-year one that survived its revocation."""
    parent = _mint(client, "one-hour")
    parent_end = asyncio.run(_expire_in(settings, parent["id"], timedelta(hours=1)))

    for days, says in ((3650, "at most 365 days (one year)"), (None, "every token expires")):
        asked = {"name": "long", "role": "operator", "expires_in_days": days}
        assert says in error(client.post("tokens", json=asked, headers=_bearer(parent)), 422)

    child = _mint(client, "child", _bearer(parent), expires_in_days=365)
    assert child["parent"] == parent["id"]
    assert _when(child) <= parent_end
    grandchild = _mint(client, "grandchild", _bearer(child))
    assert grandchild["parent"] == child["id"]
    assert _when(grandchild) <= _when(child)
    ok(client.get("sites", headers=_bearer(grandchild)))

    ok(client.delete(f"tokens/{parent['id']}"), 204)
    for token in (parent, child, grandchild):
        assert "revoked" in error(client.get("sites", headers=_bearer(token)), 401)
    revoked = {t["id"]: t["revoked_at"] for t in ok(client.get("tokens"))}
    assert all(revoked[t["id"]] for t in (parent, child, grandchild))
    (event,) = ok(client.get("audit", params={"type": "token.revoked"}))["items"]
    assert event["details"] == {"descendants": [child["id"], grandchild["id"]]}


def test_revoking_a_child_leaves_its_parent(client: TestClient) -> None:
    parent = _mint(client, "parent")
    child = _mint(client, "child", _bearer(parent))
    ok(client.delete(f"tokens/{child['id']}", headers=_bearer(parent)), 204)
    error(client.get("sites", headers=_bearer(child)), 401)
    ok(client.get("sites", headers=_bearer(parent)))


def test_tokens_made_from_an_interactive_login_stand_on_their_own(client: TestClient) -> None:
    """`rackhand login` then `rackhand tokens create`: the token outlives the one-hour login."""
    made = _mint(client, "branch-power")
    assert made["parent"] is None
    assert _when(made) - utcnow() > timedelta(days=364)
    ok(client.post("auth/logout"), 204)
    ok(client.get("sites", headers=_bearer(made)))


def test_a_named_token_ends_itself_and_what_it_made_not_its_owners_others(
    client: TestClient,
) -> None:
    """The attack: a token leaked from one script revoked every other token of its owner."""
    script = _mint(client, "branch-script")
    other = _mint(client, "ticketing")
    made = _mint(client, "made-by-script", _bearer(script))
    assert "revoking a token not made with this one" in error(
        client.delete(f"tokens/{other['id']}", headers=_bearer(script)), 403
    )
    ok(client.get("sites", headers=_bearer(other)))
    (denied,) = ok(client.get("audit", params={"type": "access.denied"}))["items"]
    assert denied["target_id"] == other["id"]

    ok(client.delete(f"tokens/{made['id']}", headers=_bearer(script)), 204)
    ok(client.delete(f"tokens/{script['id']}", headers=_bearer(script)), 204)
    admin_token = _mint(client, "admin-everywhere", role="admin")
    ok(client.delete(f"tokens/{other['id']}", headers=_bearer(admin_token)), 204)
    ok(client.delete(f"tokens/{admin_token['id']}"), 204)  # an interactive login may
