"""A caller scoped to some sites cannot tell another site's objects from objects that do not exist.

Each probe names (a) an object the caller cannot see (at site `b-dc`, or another user's) and
(b) one that does not exist; as a viewer, an operator and an admin of site `a-dc`, the two
answers must be the same (status and body) once the name in them is normalised. Add a row to
PROBES for every new route that takes a reference.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from agents.drivers.fake import FakeDriver
from agents.protocol import IpmiPath
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, SERVICE_KEY, empty_database, login
from tests.factories import device, error, ok, path, rack, site

PASSWORD = "scoped-password-123"
pytestmark = pytest.mark.xdist_group("existence-oracles")  # one seeded world per database
ROLES = ("viewer", "operator", "admin")  # held at site a-dc only, by the users "a-<role>"
NO_ID = "999999"
NO_UUID = "0" * 32


@dataclass(frozen=True)
class Probe:
    """`{x}` in the URL and in the body's strings stands for the reference probed."""

    method: str
    url: str
    hidden: str  # a key of the seeded references: the object the caller cannot see
    missing: str  # a reference to nothing
    body: Any = None


PROBES = [
    # sites
    Probe("GET", "sites/{x}", "site", "zz-none"),
    Probe("GET", "sites/{x}", "site_id", NO_ID),
    Probe("PATCH", "sites/{x}", "site", "zz-none", {"name": "Renamed"}),
    Probe("DELETE", "sites/{x}", "site", "zz-none"),
    # racks
    Probe("GET", "racks?site={x}", "site", "zz-none"),
    Probe("GET", "racks/{x}", "rack", "zz-none"),
    Probe("GET", "racks/{x}", "rack_id", NO_ID),
    Probe("GET", "racks/SHARED?site={x}", "site", "zz-none"),
    Probe("PATCH", "racks/{x}", "rack", "zz-none", {"height_u": 40}),
    Probe("DELETE", "racks/{x}", "rack", "zz-none"),
    Probe("POST", "racks", "site", "zz-none", {"site": "{x}", "name": "R9"}),
    # device filters, lists and exports
    Probe("GET", "devices?site={x}", "site", "zz-none"),
    Probe("GET", "devices?site={x}", "site_id", NO_ID),
    Probe("GET", "devices?rack={x}", "rack", "zz-none"),
    Probe("GET", "devices?rack={x}", "rack_id", NO_ID),
    Probe("GET", "devices?site=a-dc&rack={x}", "rack", "zz-none"),
    Probe("GET", "devices?parent={x}", "hypervisor", "zz-none"),
    Probe("GET", "devices?select={x}", "device", "zz-none"),
    Probe("GET", "devices?q={x}", "device", "zz-none"),
    Probe("GET", "devices/export?site={x}", "site", "zz-none"),
    Probe("GET", "devices/export?rack={x}", "rack", "zz-none"),
    Probe("GET", "devices/export?parent={x}", "hypervisor", "zz-none"),
    # devices
    Probe("GET", "devices/{x}", "device", "zz-none"),
    Probe("GET", "devices/{x}", "device_id", NO_ID),
    Probe("PATCH", "devices/{x}", "device", "zz-none", {"vendor": "Dell"}),
    Probe("DELETE", "devices/{x}", "device", "zz-none"),
    Probe("POST", "devices", "site", "zz-none", {"name": "new1", "kind": "server", "site": "{x}"}),
    Probe(
        "POST",
        "devices",
        "rack",
        "zz-none",
        {"name": "new2", "kind": "server", "site": "a-dc", "rack": "{x}"},
    ),
    Probe(
        "POST",
        "devices",
        "hypervisor",
        "zz-none",
        {"name": "new3", "kind": "vm", "site": "a-dc", "parent": "{x}"},
    ),
    Probe("PATCH", "devices/a-srv", "site", "zz-none", {"site": "{x}"}),
    Probe("PATCH", "devices/a-vm", "hypervisor", "zz-none", {"parent": "{x}"}),
    Probe(
        "POST",
        "devices/import",
        "site",
        "zz-none",
        [{"name": "imp1", "kind": "server", "site": "{x}"}],
    ),
    Probe(
        "POST",
        "devices/import",
        "hypervisor",
        "zz-none",
        [{"name": "imp2", "kind": "vm", "site": "a-dc", "parent": "{x}"}],
    ),
    Probe(
        "POST",
        "devices/import",
        "console_server",
        "zz-none",
        [
            {
                "name": "imp3",
                "kind": "server",
                "site": "a-dc",
                "paths": [{"kind": "console_port", "via": "{x}", "port": 2}],
            }
        ],
    ),
    # control paths
    Probe("GET", "devices/{x}/paths", "device", "zz-none"),
    Probe(
        "POST", "devices/{x}/paths", "device", "zz-none", {"kind": "ssh", "address": "127.0.0.1"}
    ),
    Probe("PATCH", "devices/{x}/paths/1", "device", "zz-none", {"priority": 3}),
    Probe("DELETE", "devices/{x}/paths/1", "device", "zz-none"),
    Probe(
        "POST",
        "devices/a-srv/paths",
        "console_server",
        "zz-none",
        {"kind": "console_port", "via": "{x}", "port": 2},
    ),
    Probe(
        "POST",
        "devices/a-srv/paths",
        "pdu",
        "zz-none",
        {"kind": "pdu_outlet", "via": "{x}", "outlets": [1]},
    ),
    Probe("PATCH", "devices/a-srv/paths/{a_path}", "console_server", "zz-none", {"via": "{x}"}),
    # power, boot, jobs
    Probe("POST", "devices/{x}/power", "device", "zz-none", {"action": "status"}),
    Probe("POST", "devices/{x}/boot", "device", "zz-none", {"device": "bios"}),
    Probe("POST", "power", "site", "zz-none", {"site": "{x}", "action": "status"}),
    Probe("POST", "power", "rack", "zz-none", {"rack": "{x}", "action": "status"}),
    Probe("POST", "power", "device", "zz-none", {"select": "{x}", "action": "status"}),
    Probe("GET", "jobs?site={x}", "site", "zz-none"),
    Probe("GET", "jobs?device={x}", "device", "zz-none"),
    Probe("GET", "jobs/{x}", "job", NO_UUID),
    Probe("GET", "jobs/{x}/events", "job", NO_UUID),
    Probe("POST", "jobs/{x}/cancel", "job", NO_UUID),
    # consoles
    Probe("POST", "devices/{x}/consoles", "device", "zz-none", {"via": "auto"}),
    Probe("GET", "consoles?device={x}", "device", "zz-none"),
    Probe("GET", "consoles/{x}", "console", NO_UUID),
    Probe("DELETE", "consoles/{x}", "console", NO_UUID),
    Probe("GET", "consoles/{x}/recording", "console", NO_UUID),
    Probe("WS", "consoles/{x}/stream", "console", NO_UUID),
    # audit
    Probe("GET", "audit?site={x}", "site", "zz-none"),
    Probe("GET", "audit?device={x}", "device", "zz-none"),
    # webhooks: at site b-dc, at every site, at a-dc and b-dc
    *(
        probe
        for hook in ("webhook_b", "webhook_all", "webhook_ab")
        for probe in (
            Probe("GET", "webhooks/{x}", hook, NO_ID),
            Probe("PATCH", "webhooks/{x}", hook, NO_ID, {"active": False}),
            Probe("DELETE", "webhooks/{x}", hook, NO_ID),
            Probe("GET", "webhooks/{x}/deliveries", hook, NO_ID),
            Probe("POST", "webhooks/{x}/deliveries/" + NO_UUID + "/redeliver", hook, NO_ID),
        )
    ),
    Probe(
        "POST",
        "webhooks",
        "site",
        "zz-none",
        {
            "url": "http://localhost:9/hook",
            "secret": "a-secret-of-16-chars",
            "events": ["console.closed"],
            "sites": ["{x}"],
        },
    ),
    Probe("PATCH", "webhooks/{webhook_a}", "site", "zz-none", {"sites": ["{x}"]}),
    # users and tokens
    Probe("GET", "users/{x}", "user", "zz-none"),
    Probe("GET", "users/{x}", "user_id", NO_ID),
    Probe("PATCH", "users/{x}", "user", "zz-none", {"display_name": "Bob B"}),
    Probe("DELETE", "users/{x}", "user", "zz-none"),
    Probe("DELETE", "tokens/{x}", "token_id", NO_ID),
    Probe("POST", "tokens", "site", "zz-none", {"name": "t", "role": "viewer", "sites": ["{x}"]}),
]


@dataclass
class World:
    client: TestClient  # the bootstrap admin, of every site
    refs: dict[str, str]  # what the probes name, by the keys of Probe.hidden
    fake: FakeDriver


@pytest.fixture(scope="module")
def world(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Sites a-dc and b-dc with look-alike objects, users scoped to a-dc; the fake driver.

    Seeded once per database for the whole module (argon2 makes users slow to create): the
    tests here change nothing they rely on.
    """
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("oracles"),
        secret_key=SERVICE_KEY,
        admin_password=ADMIN_PASSWORD,
        start_workers=False,
        poll_power=False,
    )
    fake = FakeDriver()
    app = create_app(settings, drivers={"ipmi": fake, "console_port": fake})
    with TestClient(app, raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        yield World(client, _seed(client), fake)
    asyncio.run(empty_database(database_url))


def _seed(client: TestClient) -> dict[str, str]:
    site(client, "a-dc")
    b = site(client, "b-dc")
    rack(client, "R1", "a-dc")
    rack(client, "SHARED", "a-dc")
    rack(client, "SHARED", "b-dc")
    rb = rack(client, "RB", "b-dc")
    device(client, "a-srv", site="a-dc", rack="R1", position_u=1)
    device(client, "a-hv", kind="hypervisor", site="a-dc")
    device(client, "a-vm", kind="vm", site="a-dc", parent="a-hv")
    device(client, "a-cs", kind="console_server", site="a-dc")
    a_path = path(client, "a-srv", kind="console_port", via="a-cs", port=1)
    path(client, "a-srv", kind="ipmi", address="127.0.0.2", username="u", secret="p")
    b_srv = device(client, "b-srv", site="b-dc", rack="RB", position_u=1, asset_tag="B-TAG")
    device(client, "b-hv", kind="hypervisor", site="b-dc")
    device(client, "b-pdu", kind="pdu", site="b-dc")
    device(client, "b-cs", kind="console_server", site="b-dc")
    path(client, "b-cs", kind="ssh", address="127.0.0.1", username="u", secret="p",
         options={"dialect": "opengear"})  # fmt: skip
    path(client, "b-srv", kind="ipmi", address="127.0.0.1", username="u", secret="p")
    path(client, "b-srv", kind="console_port", via="b-cs", port=1)
    job = ok(client.post("devices/b-srv/power", json={"action": "status"}))["job"]
    console = ok(client.post("devices/b-srv/consoles", json={"via": "console_port"}), 201)["id"]
    for name, grants in (
        ("bob", [{"role": "viewer"}]),
        ("carol", []),
        ("dave", []),
        *((f"a-{role}", [{"role": role, "sites": ["a-dc"]}]) for role in ROLES),
    ):
        body = {"username": name, "password": PASSWORD, "grants": grants}
        ok(client.post("users", json=body), 201)
    ok(client.patch("users/dave", json={"disabled": True}))
    token = ok(client.post("tokens", json={"name": "admins", "role": "viewer"}), 201)

    def hook(sites: list[str] | None) -> str:
        body = {"url": "http://localhost:9/hook", "secret": "a-secret-of-16-chars",
                "events": ["console.closed"], "sites": sites}  # fmt: skip
        return str(ok(client.post("webhooks", json=body), 201)["id"])

    return {
        "site": "b-dc",
        "site_id": str(b["id"]),
        "rack": "RB",
        "rack_id": str(rb["id"]),
        "device": "b-srv",
        "device_id": str(b_srv["id"]),
        "hypervisor": "b-hv",
        "pdu": "b-pdu",
        "console_server": "b-cs",
        "a_path": str(a_path["id"]),
        "job": job,
        "console": console,
        "user": "bob",
        "user_id": str(ok(client.get("users/bob"))["id"]),
        "token_id": str(token["id"]),  # the admin's: another user's token to everyone else
        "webhook_b": hook(["b-dc"]),
        "webhook_all": hook(None),
        "webhook_ab": hook(["a-dc", "b-dc"]),
        "webhook_a": hook(["a-dc"]),
    }


def _fill(value: Any, x: str, refs: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, ref in refs.items():
            value = value.replace("{" + key + "}", ref)
        return value.replace("{x}", x)
    if isinstance(value, list):
        return [_fill(item, x, refs) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, x, refs) for key, item in value.items()}
    return value


def _answer(client: TestClient, probe: Probe, x: str, refs: dict[str, str], token: str) -> str:
    """Status and body, with the reference probed written as <ref>."""
    url = _fill(probe.url, x, refs)
    headers = {"Authorization": f"Bearer {token}"}
    if probe.method == "WS":
        with client.websocket_connect(f"/api/v1/{url}", headers=headers) as ws:
            text = ws.receive_text()
            try:
                ws.receive_text()
                code = 1000
            except WebSocketDisconnect as closed:
                code = closed.code
        answer = f"{code} {text}"
    else:
        body = _fill(probe.body, x, refs)
        content = json.dumps(body) if body is not None else None
        headers["Content-Type"] = "application/json"
        response = client.request(probe.method, url, content=content, headers=headers)
        answer = f"{response.status_code} {response.text}"
    return re.sub(rf"(?<![\w-])(?<!\w\.){re.escape(x)}(?![\w-]|\.\w)", "<ref>", answer)


def test_invisible_and_missing_objects_get_the_same_answer(
    world: World,
) -> None:
    client, refs = world.client, world.refs
    tokens = {role: login(client, f"a-{role}", PASSWORD) for role in ROLES}
    failures = []
    for role, token in tokens.items():
        for probe in PROBES:
            hidden = _answer(client, probe, refs[probe.hidden], refs, token)
            missing = _answer(client, probe, probe.missing, refs, token)
            if hidden != missing or missing.startswith("5"):
                failures.append(
                    f"{role}: {probe.method} {probe.url} ({probe.hidden}):\n"
                    f"    hidden:  {hidden[:300]}\n    missing: {missing[:300]}"
                )
    assert not failures, f"{len(failures)} oracles:\n" + "\n".join(failures)


def test_a_name_shared_with_an_invisible_site_means_the_visible_one(
    world: World,
) -> None:
    """Rack names are unique per site: another site's `SHARED` neither matches nor makes the
    name ambiguous (which used to name that site)."""
    client = world.client
    assert "exists at sites a-dc, b-dc" in error(client.get("racks/SHARED"), 400)
    viewer = {"Authorization": f"Bearer {login(client, 'a-viewer', PASSWORD)}"}
    assert ok(client.get("racks/SHARED", headers=viewer))["site"] == "a-dc"
    assert ok(client.get("devices", params={"rack": "SHARED"}, headers=viewer))["items"] == []
    operator = {"Authorization": f"Bearer {login(client, 'a-operator', PASSWORD)}"}
    answer = client.post("power", json={"rack": "SHARED", "action": "status"}, headers=operator)
    assert "b-dc" not in error(answer, 422)


def test_a_name_taken_at_an_invisible_site_is_refused_without_naming_its_holder(
    world: World,
) -> None:
    """Device names, asset tags and site slugs are unique across all sites: that one bit is
    the residual oracle (docs/security.md); the refusal names no site, id or device."""
    client, refs = world.client, world.refs
    admin_a = {"Authorization": f"Bearer {login(client, 'a-admin', PASSWORD)}"}
    before = ok(client.get("devices", params={"limit": 1000}))
    name, tag, slug = (
        f"{what} {value!r} is not available; choose another ({what}s are unique across all sites)"
        for what, value in (("device name", "b-srv"), ("asset tag", "B-TAG"), ("site slug", "b-dc"))
    )
    attempts = [
        ("POST", "devices", {"name": "b-srv", "kind": "server", "site": "a-dc"}, name),
        ("POST", "devices", {"name": "a-new", "kind": "server", "site": "a-dc",
                             "asset_tag": "B-TAG"}, tag),
        ("PATCH", "devices/a-srv", {"name": "b-srv"}, name),
        ("PATCH", "devices/a-srv", {"asset_tag": "B-TAG"}, tag),
        ("PATCH", "sites/a-dc", {"slug": "b-dc"}, slug),
    ]  # fmt: skip
    for method, url, body, refusal in attempts:
        assert error(client.request(method, url, json=body, headers=admin_a), 409) == refusal
    imports = [
        ({"name": "b-srv", "kind": "server", "site": "a-dc"}, "name", name),
        ({"name": "a-new", "kind": "server", "site": "a-dc", "asset_tag": "B-TAG"}, "asset_tag",
         tag),
    ]  # fmt: skip
    for row, field, refusal in imports:
        answer = client.post("devices/import", json=[row], headers=admin_a)
        error(answer, 422)
        assert answer.json()["errors"] == [{"row": 1, "field": field, "message": refusal}]
    assert ok(client.get("devices", params={"limit": 1000})) == before  # nothing was stored
    # an admin of every site sees the holder, and is told which it is
    taken = client.post("devices", json={"name": "b-srv", "kind": "server", "site": "a-dc"})
    assert f"already exists (id {refs['device_id']})" in error(taken, 409)


def test_a_device_held_by_a_job_beyond_the_callers_sites_does_not_name_the_job(
    world: World,
) -> None:
    client = world.client
    world.fake.machine(IpmiPath("127.0.0.2", "u", "p")).delay = 2.0  # a-srv answers slowly
    job = ok(client.post("power", json={"select": "a-srv,b-srv", "action": "on"}), 202)
    operator = {"Authorization": f"Bearer {login(client, 'a-operator', PASSWORD)}"}
    try:
        busy = client.post("devices/a-srv/power", json={"action": "off"}, headers=operator)
        assert error(busy, 409).startswith("busy: a-srv by a job you cannot see (on);")
        assert job["id"] not in busy.text
        assert job["id"] in error(client.post("devices/a-srv/power", json={"action": "off"}), 409)
    finally:
        ok(client.post(f"jobs/{job['id']}/cancel"))


def test_users_and_tokens_of_others_read_alike_existing_or_not_and_are_audited(
    world: World,
) -> None:
    client, refs = world.client, world.refs
    viewer = {"Authorization": f"Bearer {login(client, 'a-viewer', PASSWORD)}"}
    assert error(client.get("users/bob", headers=viewer), 404) == "no user 'bob'"
    assert error(client.get("users/nobody", headers=viewer), 404) == "no user 'nobody'"
    assert ok(client.get("users/a-viewer", headers=viewer))["username"] == "a-viewer"
    token = refs["token_id"]
    assert error(client.delete(f"tokens/{token}", headers=viewer), 404) == f"no token {token}"
    assert all(t["revoked_at"] is None for t in ok(client.get("tokens")))  # still alive
    denied = ok(client.get("audit", params={"type": "access.denied", "actor": "a-viewer"}))
    probed = {(event["target_type"], event["target_name"]) for event in denied["items"]}
    assert {("user", "bob"), ("user", "nobody"), ("token", "admins")} <= probed


def test_logins_answer_alike_for_unknown_users_wrong_passwords_and_disabled_users(
    world: World,
) -> None:
    """Same status, body and headers; and each runs argon2, so the time tells nothing either.

    Rounds interleave the cases so a loaded machine slows them alike, and the fastest of each
    counts; an unknown user that skipped argon2 would answer about 20 times faster, far past
    the generous bound.
    """
    client = world.client
    cases = {"unknown": ("nobody", PASSWORD), "wrong": ("carol", "not-her-password"),
             "disabled": ("dave", PASSWORD)}  # fmt: skip
    answers: dict[str, set[tuple[int, str, str]]] = {case: set() for case in cases}
    times: dict[str, float] = dict.fromkeys(cases, float("inf"))
    for _ in range(3):  # 9 failures: under the limits of 5 per user and 20 per address
        for case, (username, password) in cases.items():
            started = time.perf_counter()
            answer = client.post("auth/token", data={"username": username, "password": password})
            times[case] = min(times[case], time.perf_counter() - started)
            answers[case].add((answer.status_code, answer.text, answer.headers["WWW-Authenticate"]))
    assert answers["unknown"] == answers["wrong"] == answers["disabled"]
    assert len(answers["unknown"]) == 1
    assert next(iter(answers["unknown"]))[0] == 401
    assert times["unknown"] > 0.3 * times["wrong"], times
