"""Who may set a password, with what proof, and what a new password ends (docs/security.md)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import error, ok
from tests.identity.conftest import freeze

ALICE = "alice-password-1"
NEW = "alice-password-2"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _session(client: TestClient, username: str, password: str) -> dict[str, str]:
    """Headers of a dashboard session of its own (the client's cookie jar is left empty)."""
    response = client.post("auth/login", json={"username": username, "password": password})
    csrf = ok(response)["csrf_token"]
    cookie = response.cookies["rackhand_session"]
    client.cookies.clear()
    return {"Cookie": f"rackhand_session={cookie}", "X-CSRF-Token": csrf}


def _events(client: TestClient, admin: dict[str, str], type_: str) -> list[dict[str, Any]]:
    return list(ok(client.get("audit", params={"type": type_}, headers=admin))["items"])


def _logs_in(client: TestClient, username: str, password: str) -> bool:
    response = client.post("auth/token", data={"username": username, "password": password})
    return bool(response.status_code == 200)


def _alice(client: TestClient, admin: dict[str, str]) -> None:
    body = {"username": "alice", "password": ALICE, "grants": [{"role": "operator"}]}
    ok(client.post("users", json=body, headers=admin), 201)


def test_a_narrow_api_token_cannot_take_over_the_admin_who_owns_it(
    anonymous: TestClient,
) -> None:
    """The attack: a viewer token of one site, owned by an admin, set the admin's password."""
    admin = _bearer(login(anonymous, "admin", ADMIN_PASSWORD))
    ok(anonymous.post("sites", json={"slug": "bj-dc1", "name": "BJ"}, headers=admin), 201)
    narrow = ok(
        anonymous.post(
            "tokens",
            json={"name": "wallboard", "role": "viewer", "sites": ["bj-dc1"]},
            headers=admin,
        ),
        201,
    )
    stolen = _bearer(narrow["token"])
    attack = {"password": "attacker-password"}
    assert "never with an API token" in error(
        anonymous.patch("users/admin", json=attack, headers=stolen), 403
    )
    with_current = attack | {"current_password": ADMIN_PASSWORD}  # knowing it does not help
    error(anonymous.patch("users/admin", json=with_current, headers=stolen), 403)
    assert not _logs_in(anonymous, "admin", "attacker-password")
    assert _logs_in(anonymous, "admin", ADMIN_PASSWORD)
    denied = _events(anonymous, admin, "access.denied")
    assert len(denied) == 2
    assert {e["actor_name"] for e in denied} == {"admin/wallboard"}
    assert denied[0]["details"] == {"action": "changing a password", "credential": "api"}
    assert _events(anonymous, admin, "user.updated") == []


def test_own_password_needs_the_current_one_and_ends_the_other_logins(
    anonymous: TestClient,
) -> None:
    admin = _bearer(login(anonymous, "admin", ADMIN_PASSWORD))
    _alice(anonymous, admin)
    here = _session(anonymous, "alice", ALICE)
    elsewhere = _session(anonymous, "alice", ALICE)
    cli = _bearer(login(anonymous, "alice", ALICE))
    script = _bearer(
        ok(anonymous.post("tokens", json={"name": "s", "role": "viewer"}, headers=cli), 201)[
            "token"
        ]
    )

    missing = anonymous.patch("users/alice", json={"password": NEW}, headers=here)
    assert "current_password" in error(missing, 422)
    wrong = {"password": NEW, "current_password": "not-her-password"}
    assert "current_password is wrong" in error(
        anonymous.patch("users/alice", json=wrong, headers=here), 403
    )
    (failed,) = _events(anonymous, admin, "auth.login_failed")
    assert (failed["target_name"], failed["actor_name"]) == ("alice", "alice")
    assert failed["details"] == {"method": "current_password", "why": "bad credentials"}
    assert "not-her-password" not in str(failed)

    right = {"password": NEW, "current_password": ALICE}
    ok(anonymous.patch("users/alice", json=right, headers=here))
    ok(anonymous.get("users/alice", headers=here))  # the session that changed it goes on
    assert "log in again" in error(anonymous.get("users/alice", headers=elsewhere), 401)
    assert "revoked" in error(anonymous.get("users/alice", headers=cli), 401)
    ok(anonymous.get("sites", headers=script))  # named API tokens stay, as documented
    assert not _logs_in(anonymous, "alice", ALICE)
    assert _logs_in(anonymous, "alice", NEW)
    updated = _events(anonymous, admin, "user.updated")[0]
    assert updated["details"]["password_changed"] is True
    assert updated["details"]["logins_ended"] == 2  # the other session and the CLI's token


def test_guessing_the_current_password_meets_the_login_limit(anonymous: TestClient) -> None:
    freeze(anonymous)  # the back-off after five failures lasts until the test moves time
    admin = _bearer(login(anonymous, "admin", ADMIN_PASSWORD))
    _alice(anonymous, admin)
    here = _bearer(login(anonymous, "alice", ALICE))
    for n in range(5):
        guess = {"password": NEW, "current_password": f"guess-{n}"}
        error(anonymous.patch("users/alice", json=guess, headers=here), 403)
    right = {"password": NEW, "current_password": ALICE}
    assert "too many failed" in error(anonymous.patch("users/alice", json=right, headers=here), 429)
    assert not _logs_in(anonymous, "alice", ALICE)  # the guesses slow her login there too


def test_resetting_another_users_password_needs_an_interactive_admin_of_all_sites(
    anonymous: TestClient,
) -> None:
    admin_login = login(anonymous, "admin", ADMIN_PASSWORD)
    admin = _bearer(admin_login)
    ok(anonymous.post("sites", json={"slug": "bj-dc1", "name": "BJ"}, headers=admin), 201)
    _alice(anonymous, admin)
    site_admin = {"username": "carol", "password": "carol-password-1",
                  "grants": [{"role": "admin", "sites": ["bj-dc1"]}]}  # fmt: skip
    ok(anonymous.post("users", json=site_admin, headers=admin), 201)
    her_session = _session(anonymous, "alice", ALICE)
    full = ok(anonymous.post("tokens", json={"name": "ops", "role": "admin"}, headers=admin), 201)
    admin_api = _bearer(full["token"])

    # an API token of an admin of every site changes no password: no one else's, nor its own
    assert "never with an API token" in error(
        anonymous.patch("users/alice", json={"password": NEW}, headers=admin_api), 403
    )
    own = {"password": "admin-password-2", "current_password": ADMIN_PASSWORD}
    error(anonymous.patch("users/admin", json=own, headers=admin_api), 403)
    # an admin of one site only is no admin of users
    carol = _bearer(login(anonymous, "carol", "carol-password-1"))
    refused = anonymous.patch("users/alice", json={"password": NEW}, headers=carol)
    assert error(refused, 404) == "no user 'alice'"  # other users are out of its sight
    assert _logs_in(anonymous, "alice", ALICE)

    # the admin's own interactive login resets it, without alice's current password
    ok(anonymous.patch("users/alice", json={"password": NEW}, headers=admin))
    assert _logs_in(anonymous, "alice", NEW)
    assert "log in again" in error(anonymous.get("users/alice", headers=her_session), 401)
    ok(anonymous.get("users", headers=admin))  # the admin's own login goes on
