"""`rackhand login` and the first run, against a real `rackhand serve`."""

from __future__ import annotations

import datetime
import json
import os
import select
import subprocess
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Run, first_run_env
from tests.conftest import ADMIN_PASSWORD
from tests.live import RACKHAND

pytestmark = [
    # The command, not the database, is under test: one backend keeps the runs short.
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    # One worker runs the module: its tests share one `rackhand serve`.
    pytest.mark.xdist_group("cli-serve"),
]

MINE = '# my settings\ncolour = "blue"\n\n[profiles.lab]\ntoken = "rh_lab"\n'


def _config(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".config" / "rackhand" / "config.toml"


def test_first_run_then_login_then_expiry(newcomer: Run, server: str, tmp_path: Path) -> None:
    first = newcomer("devices", "list")
    assert first.returncode == 1
    for way in ("rackhand login", "RACKHAND_USERNAME", "RACKHAND_PASSWORD", "RACKHAND_TOKEN"):
        assert way in first.stderr

    config = _config(tmp_path)
    config.parent.mkdir(parents=True)
    config.write_text(MINE)
    logged = newcomer("login", "--username", "admin", RACKHAND_PASSWORD=ADMIN_PASSWORD)
    assert logged.returncode == 0, logged.stderr
    assert f"stored in {config} until" in logged.stdout
    stored = tomllib.loads(config.read_text())
    assert ADMIN_PASSWORD not in logged.stdout + logged.stderr
    assert stored["token"] not in logged.stdout + logged.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    assert config.read_text().endswith(MINE)  # other keys, tables and comments kept
    assert (stored["colour"], stored["profiles"], stored["url"]) == (
        "blue",
        {"lab": {"token": "rh_lab"}},
        server,
    )
    left = stored["token_expires_at"] - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=59) < left <= datetime.timedelta(hours=1)

    listed = newcomer("devices", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []

    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC).isoformat()
    lines = config.read_text().splitlines()
    config.write_text(
        "\n".join(f"token_expires_at = {past}" if "token_expires_at" in s else s for s in lines)
    )
    expired = newcomer("devices", "list")
    assert expired.returncode == 1
    assert "expired at 2020-" in expired.stderr
    assert "rackhand login" in expired.stderr


def test_a_stored_token_the_server_refuses_names_login(newcomer: Run, tmp_path: Path) -> None:
    config = _config(tmp_path)
    config.parent.mkdir(parents=True)
    config.write_text('token = "rh_revoked"\n')
    refused = newcomer("devices", "list")
    assert refused.returncode == 1
    assert "expired or revoked" in refused.stderr
    assert "run `rackhand login` again" in refused.stderr


def test_scripts_trade_a_password_without_storing_it(newcomer: Run, tmp_path: Path) -> None:
    env = {"RACKHAND_USERNAME": "admin", "RACKHAND_PASSWORD": ADMIN_PASSWORD}
    listed = newcomer("devices", "list", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    assert not _config(tmp_path).exists()
    wrong = newcomer("login", "-u", "admin", RACKHAND_PASSWORD="not-the-password")
    assert wrong.returncode == 1
    assert "not-the-password" not in wrong.stdout + wrong.stderr
    no_terminal = newcomer("login", "-u", "admin")
    assert no_terminal.returncode == 2
    assert "RACKHAND_PASSWORD" in no_terminal.stderr
    assert not _config(tmp_path).exists()


@pytest.mark.usefixtures("newcomer")  # for the database it empties afterwards
def test_login_asks_the_password_without_echoing_it(server: str, tmp_path: Path) -> None:
    main, terminal = os.openpty()
    process = subprocess.Popen(
        [RACKHAND, "login"],
        env=first_run_env(server, tmp_path / "home"),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    seen = b""

    def until(wanted: bytes) -> None:
        nonlocal seen
        while wanted not in seen:
            try:
                ready, _, _ = select.select([main], [], [], 30)
                chunk = os.read(main, 4096) if ready else b""
            except OSError:  # the terminal closed: the command has ended
                chunk = b""
            if not chunk:
                pytest.fail(f"no {wanted!r} in {seen!r}")
            seen += chunk

    try:
        until(b"username: ")
        os.write(main, b"admin\n")
        until(b"password: ")
        os.write(main, ADMIN_PASSWORD.encode() + b"\n")
        until(b"until")
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        os.close(main)
    assert ADMIN_PASSWORD.encode() not in seen
    assert b"Logged in to" in seen
    assert tomllib.loads(_config(tmp_path).read_text())["token"].startswith("rh_")


def test_passwd_changes_the_password_and_ends_other_logins(
    newcomer: Run, server: str, tmp_path: Path
) -> None:
    env = {"RACKHAND_PASSWORD": ADMIN_PASSWORD}
    assert newcomer("login", "-u", "admin", **env).returncode == 0
    other = httpx.post(
        f"{server}/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()["access_token"]

    wrong = newcomer(
        "passwd", "-u", "admin", RACKHAND_PASSWORD="not-it", RACKHAND_NEW_PASSWORD="n3w-secret-pw"
    )
    assert wrong.returncode == 1
    no_terminal = newcomer("passwd", "-u", "admin", **env)
    assert no_terminal.returncode == 2
    assert "RACKHAND_NEW_PASSWORD" in no_terminal.stderr

    changed = newcomer("passwd", "-u", "admin", **env, RACKHAND_NEW_PASSWORD="n3w-secret-pw")
    assert changed.returncode == 0, changed.stderr
    assert "Changed the password of admin" in changed.stdout
    assert "n3w-secret-pw" not in changed.stdout + changed.stderr
    ended = httpx.get(f"{server}/api/v1/devices", headers={"Authorization": f"Bearer {other}"})
    assert ended.status_code == 401
    assert newcomer("devices", "list").returncode == 0  # the login passwd made is kept
    assert newcomer("login", "-u", "admin", **env).returncode == 1
    assert newcomer("login", "-u", "admin", RACKHAND_PASSWORD="n3w-secret-pw").returncode == 0
