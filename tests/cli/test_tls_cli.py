"""`rackhand` against a central whose certificate comes from a private CA."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.cli.conftest import runner
from tests.conftest import ADMIN_PASSWORD
from tests.live import free_port

# The command, not the database, is under test: one backend keeps the runs short.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

ADMIN = {"RACKHAND_USERNAME": "admin", "RACKHAND_PASSWORD": ADMIN_PASSWORD}


def test_the_ca_from_an_option_the_environment_or_the_config(
    tls_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca = tls_server
    run = runner(url, tmp_path / "home")
    untrusted = run("devices", "list", **ADMIN)
    assert untrusted.returncode == 1
    assert f"cannot verify the TLS certificate of {url}" in untrusted.stderr
    assert "--ca-cert" in untrusted.stderr
    assert run("--ca-cert", str(ca), "devices", "list", **ADMIN).returncode == 0
    assert run("devices", "list", RACKHAND_CA_CERT=str(ca), **ADMIN).returncode == 0
    assert run("devices", "list", SSL_CERT_FILE=str(ca), **ADMIN).returncode == 0
    elsewhere = f"http://127.0.0.1:{free_port()}"
    flags = run("--url", url, "--ca-cert", str(ca), "devices", "list", RACKHAND_URL=elsewhere)
    assert "rackhand login" in flags.stderr  # it reached the central: only a token is missing

    missing = run("--ca-cert", str(tmp_path / "none.pem"), "devices", "list", **ADMIN)
    assert missing.returncode == 2
    assert "cannot load the CA certificate" in missing.stderr

    logged = run("--ca-cert", str(ca), "login", "-u", "admin", RACKHAND_PASSWORD=ADMIN_PASSWORD)
    assert logged.returncode == 0, logged.stderr
    config = tmp_path / "home" / ".config" / "rackhand" / "config.toml"
    assert tomllib.loads(config.read_text())["ca_cert"] == str(ca)
    assert run("devices", "list").returncode == 0  # token, URL and CA from config.toml
