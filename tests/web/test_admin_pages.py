"""The admin pages without a browser: each person sees the pages and rows the API would give
them, and refusals are the API's (403, or 404 for another site's webhook)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.factories import ok
from tests.web.test_audit_page import fleet, page
from tests.webhooks.conftest import LOOPBACK

__all__ = ["fleet"]  # the fixture, shared with the audit page's tests

HOOK = {"secret": "whsec-0123456789abcdef", "events": ["job.finished"]}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Webhooks to loopback allowed, as RACKHAND_WEBHOOK_ALLOW_NETWORKS would."""
    return settings.model_copy(update={"webhook_allow_networks": LOOPBACK})


def hook(client: TestClient, sites: list[str] | None, port: int = 9) -> dict[str, Any]:
    body = HOOK | {"url": f"http://127.0.0.1:{port}/hooks", "sites": sites}
    return dict(ok(client.post("webhooks", json=body), 201))


def test_a_viewer_gets_her_tokens_and_nothing_else(fleet: TestClient) -> None:
    index = page(fleet, "vera", "/admin")
    assert index.status_code == 200
    assert 'href="/admin/tokens"' in index.text
    assert 'href="/admin/users"' not in index.text
    assert 'href="/admin/webhooks"' not in index.text
    assert "viewer at bj-dc1" in index.text
    tokens = page(fleet, "vera", "/admin/tokens")
    assert tokens.status_code == 200
    assert '<option value="viewer">' in tokens.text
    assert '<option value="operator">' not in tokens.text  # never more than she holds
    for refused in ("/admin/users", "/admin/webhooks"):
        shown = page(fleet, "vera", refused)
        assert shown.status_code == 403, refused
        assert "Not allowed" in shown.text
        assert "data-create-user" not in shown.text


def test_tokens_are_ones_own_and_every_users_for_an_admin(fleet: TestClient) -> None:
    ok(fleet.post("tokens", json={"name": "admin-script", "role": "viewer"}), 201)
    page(fleet, "olga", "/admin")
    made = fleet.post(
        "http://testserver/api/v1/tokens",
        json={"name": "olga-script", "role": "operator", "sites": ["bj-dc1"]},
        headers={"Authorization": "", "X-CSRF-Token": fleet.cookies["rackhand_csrf"]},
    )
    assert made.status_code == 201, made.text
    mine = page(fleet, "olga", "/admin/tokens")
    assert "olga-script" in mine.text
    assert "admin-script" not in mine.text
    assert made.json()["token"] not in mine.text  # shown once, in the API's answer only
    everyone = page(fleet, "admin", "/admin/tokens")
    assert "olga-script" in everyone.text
    assert "admin-script" in everyone.text
    assert '<th scope="col">User</th>' in everyone.text


def test_users_page_offers_its_actions_to_an_admin(fleet: TestClient) -> None:
    shown = page(fleet, "admin", "/admin/users")
    assert shown.status_code == 200
    for username in ("admin", "olga", "vera", "sam"):
        assert f'data-user-row="{username}"' in shown.text
    assert 'aria-label="Disable olga"' in shown.text
    assert 'aria-label="Disable admin"' not in shown.text  # not oneself
    assert "operator at bj-dc1" in shown.text


def test_another_sites_webhook_is_missing_and_a_site_admin_sees_his_own(
    fleet: TestClient,
) -> None:
    ok(fleet.patch("users/sam", json={"grants": [{"role": "admin", "sites": ["sh-br12"]}]}))
    theirs = hook(fleet, ["bj-dc1"])
    his = hook(fleet, ["sh-br12"])
    every = hook(fleet, None)
    listing = page(fleet, "sam", "/admin/webhooks")
    assert listing.status_code == 200
    assert f'data-webhook-row="{his["id"]}"' in listing.text
    assert f'data-webhook-row="{theirs["id"]}"' not in listing.text
    assert "data-every-site" not in listing.text  # an all-sites webhook needs every site
    for hidden in (theirs, every):
        shown = page(fleet, "sam", f"/admin/webhooks/{hidden['id']}")
        assert shown.status_code == 404
        assert f"no webhook {hidden['id']}" in shown.text
    assert page(fleet, "sam", "/admin/webhooks/999").status_code == 404
    own = page(fleet, "sam", f"/admin/webhooks/{his['id']}")
    assert own.status_code == 200
    assert "No deliveries yet" in own.text
