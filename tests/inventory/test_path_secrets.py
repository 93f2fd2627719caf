"""A stored secret follows its destination: re-pointing a path without a new secret drops it.

The attack: an admin who cannot read a console server's password PATCHes its ssh path to a
listener of their own and asks for a console, so the central sends the password there. The
listeners here record what reaches them; the built-in agent and the real drivers do the rest.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, error, ok, path, site

BMC_PASSWORD = "bmc-pa55-never-moves"
BOX_PASSWORD = "box-pa55-never-moves"
KEY_1 = "SHA256:" + "A" * 43
KEY_2 = "SHA256:" + "B" * 43
FINGERPRINT = ":".join(["AB"] * 32)


def _updated(client: TestClient, device_name: str, path_id: int, body: dict[str, Any]) -> Any:
    return ok(client.patch(f"devices/{device_name}/paths/{path_id}", json=body))


def _last_update(client: TestClient) -> dict[str, Any]:
    events = ok(client.get("audit", params={"type": "path.updated", "limit": 1}))["items"]
    return dict(events[0]["details"])


IPMI = {"kind": "ipmi", "address": "10.1.0.11", "username": "admin"}
SSH = {"kind": "ssh", "address": "10.0.0.5", "username": "admin"}
REDFISH = {"kind": "redfish", "address": "https://10.1.0.12/redfish/v1", "username": "admin"}
PINNED = {"dialect": "opengear", "host_key": KEY_1}


@pytest.mark.parametrize(
    ("created", "patch", "change", "moved"),
    [
        (IPMI, {"priority": 5}, "kept", None),
        (IPMI, {"options": {"cipher_suite": 17}}, "kept", None),
        (IPMI, {"username": "root"}, "kept", None),  # the same BMC checks it
        (IPMI, {"address": "10.1.0.11"}, "kept", None),  # the same address
        (IPMI, {"address": "127.0.0.1"}, "dropped", ["address"]),
        (IPMI, {"port": 6230}, "dropped", ["port"]),
        (IPMI, {"address": "127.0.0.1", "secret": "a-new-one"}, "replaced", None),
        (IPMI, {"secret": None}, "cleared", None),
        (SSH | {"options": PINNED}, {"options": PINNED | {"dialect": "menu"}}, "kept", None),
        (SSH | {"options": PINNED}, {"options": {"dialect": "opengear"}}, "dropped",
         ["options.host_key"]),
        (SSH | {"options": PINNED}, {"options": PINNED | {"host_key": KEY_2}}, "dropped",
         ["options.host_key"]),
        (SSH, {"options": PINNED}, "kept", None),  # unpinned trusted any key; a pin narrows it
        (REDFISH, {"options": {"tls_fingerprint": FINGERPRINT}}, "dropped",
         ["options.tls_fingerprint"]),  # unpinned Redfish trusted no certificate
        (REDFISH | {"options": {"tls_fingerprint": FINGERPRINT}},
         {"options": {"tls_fingerprint": FINGERPRINT.replace(":", "").lower()}}, "kept", None),
        (REDFISH, {"address": "https://10.1.0.99/redfish/v1"}, "dropped", ["address"]),
    ],
)  # fmt: skip
def test_a_secret_stays_only_where_it_was_sent_before(
    client: TestClient,
    created: dict[str, Any],
    patch: dict[str, Any],
    change: str,
    moved: list[str] | None,
) -> None:
    site(client, "bj-dc1")
    device(client, "web01")
    stored = path(client, "web01", **created, secret=BMC_PASSWORD)
    answer = _updated(client, "web01", stored["id"], patch)
    assert answer["secret_change"] == change
    assert answer["secret"] == ("set" if change in ("kept", "replaced") else None)
    assert ok(client.get("devices/web01/paths"))[0]["secret"] == answer["secret"]
    details = _last_update(client)
    assert details["secret"] == change
    assert details.get("repointed") == moved
    if moved:
        assert "send it again" in answer["message"]
        assert ", ".join(moved) in answer["message"]
    else:
        assert answer["message"] == ""


def test_an_options_patch_without_the_pin_says_to_restate_it(client: TestClient) -> None:
    site(client, "bj-dc1")
    device(client, "cs-01", kind="console_server")
    stored = path(client, "cs-01", **SSH, secret=BOX_PASSWORD, options=PINNED)
    answer = _updated(client, "cs-01", stored["id"], {"options": {"dialect": "menu"}})
    assert "restate options.host_key to keep the pin" in answer["message"]
    again = _updated(client, "cs-01", stored["id"], {"priority": 1})
    assert (again["secret"], again["secret_change"]) == (None, "unset")
    assert _last_update(client)["secret"] == "unset"


def test_paths_without_a_secret_report_none(client: TestClient) -> None:
    site(client, "bj-dc1")
    device(client, "web01")
    device(client, "cs-01", kind="console_server")
    device(client, "cs-02", kind="console_server")
    port = path(client, "web01", kind="console_port", via="cs-01", port=3)
    answer = _updated(client, "web01", port["id"], {"via": "cs-02"})
    assert (answer["secret_change"], answer["message"]) == (None, "")
    assert "secret" not in _last_update(client)


def test_import_keeps_a_secret_only_where_patch_would(client: TestClient) -> None:
    """The same rule: an imported path without a secret keeps one only if it is not re-pointed."""
    site(client, "bj-dc1")
    device(client, "cs-01", kind="console_server")
    path(client, "cs-01", **SSH, secret=BOX_PASSWORD, options=PINNED)

    def imported(options: dict[str, Any], address: str = "10.0.0.5") -> str | None:
        row = {"name": "cs-01", "paths": [SSH | {"address": address, "options": options}]}
        response = client.post(
            "devices/import",
            content=json.dumps([row]),
            headers={"content-type": "application/json"},
        )
        ok(response)
        secret: str | None = ok(client.get("devices/cs-01/paths"))[0]["secret"]
        return secret

    assert imported(PINNED | {"dialect": "menu"}) == "set"
    assert imported({"dialect": "menu"}) is None  # the pin was dropped
    path_id = ok(client.get("devices/cs-01/paths"))[0]["id"]
    _updated(client, "cs-01", path_id, {"secret": BOX_PASSWORD, "options": PINNED})
    assert imported(PINNED, address="10.0.0.6") is None


# The attack, through the built-in agent ------------------------------------------------------


@dataclass
class Heard:
    """What reached a listener: connections, and the passwords offered."""

    port: int = 0
    connections: int = 0
    passwords: list[str] = field(default_factory=list)
    key: str = ""


class _Recorder(asyncssh.SSHServer):
    def __init__(self, heard: Heard) -> None:
        self.heard = heard

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.heard.connections += 1

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        self.heard.passwords.append(password)
        return False


@contextmanager
def ssh_listener() -> Iterator[Heard]:
    """An SSH server of the attacker's on 127.0.0.1, in a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    heard = Heard()
    key = asyncssh.generate_private_key("ssh-ed25519")
    heard.key = key.get_fingerprint("sha256")

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(
            lambda: _Recorder(heard), "127.0.0.1", 0, server_host_keys=[key]
        )

    acceptor = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    heard.port = acceptor.get_port()
    try:
        yield heard
    finally:
        acceptor.close()
        asyncio.run_coroutine_threadsafe(acceptor.wait_closed(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def fleet(settings: Settings) -> Iterator[TestClient]:
    """Real drivers: web02 on port 3 of cs-01, web03 on outlet 4 of pdu-a1, web04 with a BMC."""
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet), raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        device(client, "cs-01", kind="console_server")
        path(client, "cs-01", **SSH, secret=BOX_PASSWORD, options=PINNED)
        device(client, "pdu-a1", kind="pdu")
        path(client, "pdu-a1", **SSH | {"address": "10.0.0.6"}, secret=BOX_PASSWORD,
             options={"dialect": "apc", "host_key": KEY_1})  # fmt: skip
        device(client, "web02")
        path(client, "web02", kind="console_port", via="cs-01", port=3)
        device(client, "web03")
        path(client, "web03", kind="pdu_outlet", via="pdu-a1", outlets=[4])
        device(client, "web04")
        path(client, "web04", **IPMI, secret=BMC_PASSWORD)
        yield client


def _ssh_path(client: TestClient, name: str) -> int:
    return int(ok(client.get(f"devices/{name}/paths"))[0]["id"])


def test_a_re_pointed_console_server_gets_no_password(fleet: TestClient) -> None:
    with ssh_listener() as heard:
        ssh_id = _ssh_path(fleet, "cs-01")
        moved = {"address": "127.0.0.1", "port": heard.port, "options": {"dialect": "opengear"}}
        answer = _updated(fleet, "cs-01", ssh_id, moved)
        assert (answer["secret"], answer["secret_change"]) == (None, "dropped")
        assert _last_update(fleet)["repointed"] == ["address", "port", "options.host_key"]

        response = fleet.post("devices/web02/consoles", json={"via": "console_port"})
        assert "no secret set for its ssh path, so nothing was sent" in error(response, 502)
        assert (heard.connections, heard.passwords) == (0, [])

        # A secret given with the new destination is the admin's own to send there.
        _updated(fleet, "cs-01", ssh_id, {"secret": "the-admins-own"})
        response = fleet.post("devices/web02/consoles", json={"via": "console_port"})
        assert "refused the password" in error(response, 502)
        assert heard.passwords == ["the-admins-own"]
        assert BOX_PASSWORD not in heard.passwords


def test_a_re_pointed_pdu_gets_no_password(fleet: TestClient) -> None:
    with ssh_listener() as heard:
        pinned_there = {"dialect": "apc", "host_key": heard.key}
        moved = {"address": "127.0.0.1", "port": heard.port, "options": pinned_there}
        answer = _updated(fleet, "pdu-a1", _ssh_path(fleet, "pdu-a1"), moved)
        assert answer["secret_change"] == "dropped"
        status = ok(fleet.post("devices/web03/power", json={"action": "status"}))
        assert status["status"] == "failed"
        assert "no secret set for its ssh path, so nothing was sent" in status["message"]
        assert (heard.connections, heard.passwords) == (0, [])


def test_a_re_pointed_bmc_gets_nothing(fleet: TestClient) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(0.5)
        ipmi_id = _ssh_path(fleet, "web04")
        moved = {"address": "127.0.0.1", "port": listener.getsockname()[1]}
        assert _updated(fleet, "web04", ipmi_id, moved)["secret_change"] == "dropped"
        status = ok(fleet.post("devices/web04/power", json={"action": "status"}))
        assert status["status"] == "failed"
        assert "no secret set for this path, so nothing was sent" in status["message"]
        with pytest.raises(TimeoutError):
            listener.recv(4096)
