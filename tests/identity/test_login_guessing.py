"""Password guessing, performed: concurrent guesses, an attacker at another address, the
back-off, the client's address behind a proxy, and argon2 with no transaction open."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import ValidationError

from app.config import Settings
from app.identity.logins import ARGON2_AT_ONCE
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD
from tests.factories import error, ok
from tests.identity.conftest import Hasher, audit_log, forwarded, freeze, wait_for

ATTACKER, HOME = "198.51.100.66", "192.0.2.10"


def _token(client: TestClient, password: str, **headers: str) -> Response:
    form = {"username": "admin", "password": password}
    response: Response = client.post("auth/token", data=form, headers=headers)
    return response


def test_forty_concurrent_wrong_passwords_are_checked_five_times(
    anonymous: TestClient, settings: Settings, hasher: Hasher
) -> None:
    """The attack: 40 guesses at once all passed a count that none had added to yet."""
    freeze(anonymous)  # however slowly the 40 arrive, the back-off has not ended
    with ThreadPoolExecutor(40) as pool, hasher.held():  # guesses that get in wait in argon2
        guesses = [pool.submit(_token, anonymous, f"guess-{n}") for n in range(40)]
        # 5 are checked, 32 wait for their outcome, and the 3 more are refused at once
        wait_for(lambda: sum(guess.done() for guess in guesses) >= 3)
    answers = [guess.result() for guess in guesses]
    assert Counter(answer.status_code for answer in answers) == {401: 5, 429: 35}
    assert hasher.verified == 5
    assert hasher.most <= ARGON2_AT_ONCE
    assert len(audit_log(settings, "auth.login_failed")) == 5
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert "too many failed logins" in error(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1


def test_an_attacker_elsewhere_does_not_lock_the_admin_out(
    behind_proxy: TestClient, settings: Settings, hasher: Hasher
) -> None:
    """The attack: five bad guesses from anywhere locked the admin out for 15 minutes."""
    answers = Counter(
        _token(behind_proxy, f"guess-{n}", **forwarded(ATTACKER)).status_code for n in range(50)
    )
    assert answers[401] + answers[429] == 50
    assert 5 <= hasher.verified <= 10  # five free guesses, then a doubling wait
    # the admin, at an address it never logged in from, is not slowed at all
    ok(_token(behind_proxy, ADMIN_PASSWORD, **forwarded(HOME)))
    (login,) = audit_log(settings, "auth.login")
    assert login.source_ip == HOME
    failed = audit_log(settings, "auth.login_failed")
    assert {event.source_ip for event in failed} == {ATTACKER}
    assert len(failed) == answers[401]


def test_back_off_grows_and_a_success_resets_it(anonymous: TestClient) -> None:
    clock = freeze(anonymous)
    for _ in range(5):
        error(_token(anonymous, "wrong"), 401)
    waits = []
    for _ in range(3):
        refused = _token(anonymous, "wrong")
        error(refused, 429)
        waits.append(int(refused.headers["Retry-After"]))
        clock.advance(waits[-1])
        error(_token(anonymous, "wrong"), 401)
    assert waits == [1, 2, 4]
    refused = _token(anonymous, ADMIN_PASSWORD)  # the right password waits its turn too
    assert "try again in 8 seconds" in error(refused, 429)
    clock.advance(8)
    ok(_token(anonymous, ADMIN_PASSWORD))
    for _ in range(5):  # forgotten: five free guesses again
        error(_token(anonymous, "wrong"), 401)
    assert _token(anonymous, "wrong").headers["Retry-After"] == "1"


def test_failures_outlive_a_restart(
    anonymous: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """The throttle forgets with its process; the audit log reminds the next one."""
    clock = freeze(anonymous)
    for _ in range(13):  # 13 failures in a row: the next guess waits 256 s
        answer = _token(anonymous, "wrong")
        if answer.status_code == 429:
            clock.advance(int(answer.headers["Retry-After"]))
            answer = _token(anonymous, "wrong")
        error(answer, 401)
    # another process on the same database (its own data folder: one central per folder)
    elsewhere = settings.model_copy(update={"data_dir": tmp_path / "restarted"})
    with TestClient(create_app(elsewhere), raise_server_exceptions=False) as restarted:
        restarted.base_url = restarted.base_url.join("/api/v1/")
        refused = _token(restarted, ADMIN_PASSWORD)
        assert "too many failed logins" in error(refused, 429)
        assert 1 <= int(refused.headers["Retry-After"]) <= 256


def test_a_trusted_proxy_names_the_client(behind_proxy: TestClient, settings: Settings) -> None:
    error(_token(behind_proxy, "wrong", **forwarded(ATTACKER)), 401)
    error(_token(behind_proxy, "wrong"), 401)  # the proxy's own request
    assert [e.source_ip for e in audit_log(settings, "auth.login_failed")] == [ATTACKER, "10.0.0.2"]


def test_an_untrusted_peer_cannot_choose_its_address(
    anonymous: TestClient, settings: Settings
) -> None:
    freeze(anonymous)
    for n in range(5):
        error(_token(anonymous, "wrong", **forwarded(f"192.0.2.{n}")), 401)
    # a new address in every X-Forwarded-For buys nothing: the peer is the source
    error(_token(anonymous, "wrong", **forwarded("192.0.2.99")), 429)
    assert {e.source_ip for e in audit_log(settings, "auth.login_failed")} == {"testclient"}


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RACKHAND_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1,2001:db8::/32")
    assert Settings().trusted_proxies == ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]
    for wrong in ("*", "10.0.0.1/8", "proxy.example.com"):
        monkeypatch.setenv("RACKHAND_TRUSTED_PROXIES", wrong)
        with pytest.raises(ValidationError, match="not an address or a network"):
            Settings()


def test_argon2_runs_with_no_transaction_open(client: TestClient, hasher: Hasher) -> None:
    """The attack: logins held the write lock through argon2, and every write queued behind."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    at_once = min(5, ARGON2_AT_ONCE)
    with ThreadPoolExecutor(6) as pool, hasher.held():
        logins = [pool.submit(_token, client, ADMIN_PASSWORD) for _ in range(5)]
        wait_for(lambda: hasher.verifying >= at_once)  # logins inside argon2 at once
        wait_for(lambda: engine.pool.checkedout() == 0, within=10)  # and no connection
        write = pool.submit(client.post, "sites", json={"slug": "x1", "name": "X"})
        wait_for(write.done, within=10)  # a write goes through meanwhile
        assert hasher.verifying == at_once
    ok(write.result(), 201)
    assert all(login.result().status_code == 200 for login in logins)
    assert hasher.most == at_once  # the others waited their turn, outside argon2
