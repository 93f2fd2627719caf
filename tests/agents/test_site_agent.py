"""A branch reached only through its site agent: real separation, a real link on TLS.

The branch is a network namespace: our simulated BMCs, console server and PDU listen on its own
127.0.0.1, and `rackhand agent` runs inside it. The central (`rackhand serve`) listens with a
certificate of a private CA on the root end of the veth pair, so the agent dials out over WSS
and the central cannot reach a device except through it.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from agents.protocol import (
    PROTOCOL,
    Hello,
    Refusal,
    RefusedBecause,
    Report,
    TaskStatus,
    decode,
    encode,
)
from sim.openipmi import Bmc as OpenIpmiBmc
from tests.branch import Branch, BranchFleet, unavailable
from tests.conftest import ADMIN_PASSWORD, SERVICE_KEY
from tests.factories import device, ok, path, site
from tests.live import RACKHAND, free_port, private_ca, until

pytestmark = [
    pytest.mark.xdist_group("netns"),
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]
SITE = "sh-br12"


@dataclass
class Rig:
    branch: Branch
    fleet: BranchFleet
    url: str
    ca: Path
    folder: Path
    api: httpx.Client
    openipmi: OpenIpmiBmc
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def enrol(self, name: str, **fields: Any) -> dict[str, Any]:
        return ok(self.api.post("agents", json={"site": SITE, "name": name} | fields), 201)  # type: ignore[no-any-return]

    def start_agent(self, name: str, token: str | None = None) -> subprocess.Popen[bytes]:
        """`rackhand agent` inside the branch (enrolled now unless its folder holds one)."""
        folder = self.folder / f"agent-{name}"
        if token is None and not (folder / "agent.json").exists():
            token = self.enrol(name)["join_token"]
        command = [RACKHAND, "agent", "--central", self.url, "--data-dir", str(folder),
                   "--ca-cert", str(self.ca)]  # fmt: skip
        if token:
            command += ["--join-token", token]
        log = (self.folder / f"agent-{name}.log").open("ab")
        process = self.branch.run(command, stdout=log, stderr=subprocess.STDOUT)
        self.agents[name] = process
        return process

    def status(self, name: str) -> dict[str, Any]:
        agents = ok(self.api.get("agents", params={"site": SITE}))
        return next(agent for agent in agents if agent["name"] == name)

    def wait_online(self, name: str) -> dict[str, Any]:
        until(lambda: self.status(name)["status"] == "online", f"agent {name} online", 60)
        return self.status(name)

    def kill(self, name: str) -> None:
        process = self.agents.pop(name)
        process.kill()
        process.wait(10)
        until(lambda: self.status(name)["status"] != "online", f"agent {name} offline", 20)

    def power(self, device_: str, action: str, **body: Any) -> dict[str, Any]:
        answer = self.api.post(f"devices/{device_}/power", json={"action": action} | body)
        assert answer.status_code in (200, 202), answer.text
        return answer.json()  # type: ignore[no-any-return]

    def job(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        until(
            lambda: ok(self.api.get(f"jobs/{job_id}"))["status"] not in ("queued", "running"),
            f"job {job_id} to end",
            timeout,
        )
        return ok(self.api.get(f"jobs/{job_id}"))  # type: ignore[no-any-return]

    def tasks(self, job_id: str) -> dict[str, dict[str, Any]]:
        job = ok(self.api.get(f"jobs/{job_id}"))
        return {task["device"]: task for task in job["tasks"]}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with Branch() as branch:
        fleet = branch.start_fleet(3, "--hypervisors", "1", "--hypervisor-dialect", "xl",
                                   "--hypervisor-guests", "2")  # fmt: skip
        (openipmi,) = branch.start_ipmi_sim(1)
        folder = tmp_path_factory.mktemp("central")
        ca, cert, key = private_ca(folder, host=branch.central_address)
        port = free_port()
        env = os.environ | {
            "RACKHAND_SECRET_KEY": SERVICE_KEY,
            "RACKHAND_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RACKHAND_AGENT_HEARTBEAT_SECONDS": "1",
            "RACKHAND_POLL_POWER": "false",
        }
        log = (folder / "central.log").open("wb")
        central = subprocess.Popen(
            [RACKHAND, "serve", "--host", branch.central_address, "--port", str(port),
             "--data-dir", str(folder / "data"), "--tls-cert", str(cert), "--tls-key", str(key)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"https://{branch.central_address}:{port}"
        try:
            until(lambda: _ready(url, ca), "the central to answer", 60)
            token = httpx.post(
                f"{url}/api/v1/auth/token",
                data={"username": "admin", "password": ADMIN_PASSWORD},
                verify=str(ca),
            ).json()["access_token"]
            api = httpx.Client(
                base_url=f"{url}/api/v1/",
                verify=str(ca),
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            _seed(api, fleet)
            device(api, "osim1", site=SITE)
            path(api, "osim1", kind="ipmi", address=openipmi.address, port=openipmi.port,
                 username=openipmi.username, secret=openipmi.password)  # fmt: skip
            rig = Rig(branch, fleet, url, ca, folder, api, openipmi)
            yield rig
        finally:
            central.terminate()
            try:
                central.wait(20)
            except subprocess.TimeoutExpired:
                central.kill()
                pytest.fail(f"rackhand serve did not stop: {(folder / 'central.log').read_text()}")


def _ready(url: str, ca: Path) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/readyz", verify=str(ca)).status_code == 200
    except httpx.TransportError:
        return False


def _seed(api: httpx.Client, fleet: BranchFleet) -> None:
    site(api, SITE, name="Shanghai branch 12", kind="branch")
    for box in fleet.boxes:
        device(api, box.name, kind=box.kind, site=SITE)
        options = {"hypervisor": box.dialect} if box.kind == "hypervisor" else {
            "dialect": box.dialect}  # fmt: skip
        path(api, box.name, kind="ssh", address=box.address, port=box.port,
             username=box.username, secret=box.password, options=options)  # fmt: skip
    for machine in fleet.machines:
        device(api, machine.name, site=SITE)
        bmc = machine.bmc
        path(api, machine.name, kind="ipmi", address=bmc.address, port=bmc.port,
             username=bmc.username, secret=bmc.password,
             options={"cipher_suite": bmc.cipher_suite})  # fmt: skip
        if machine.console is not None:
            path(api, machine.name, kind="console_port", via=machine.console.server,
                 port=machine.console.port)  # fmt: skip
        for outlet in machine.outlets:
            path(api, machine.name, kind="pdu_outlet", via=outlet.pdu, outlets=[outlet.outlet])


@pytest.fixture(scope="module")
def linked(rig: Rig) -> Rig:
    """One agent, br12-a, online."""
    rig.start_agent("br12-a")
    agent = rig.wait_online("br12-a")
    assert agent["address"] == rig.branch.address
    assert agent["version"]
    return rig


def test_the_site_fails_fast_before_its_agent_connects(rig: Rig) -> None:
    rig.enrol("br12-pending")
    started = time.monotonic()
    result = rig.power("node1", "status")
    assert result["status"] == "failed"
    assert "no agent of site sh-br12 is online" in result["message"]
    assert "br12-pending enrolled, never connected" in result["message"]
    assert time.monotonic() - started < 5
    pending = rig.status("br12-pending")
    assert pending["status"] == "pending"
    assert pending["join_expires_at"]
    ok(rig.api.delete(f"agents/{pending['id']}"), 204)


def test_power_boot_and_a_bulk_job_go_through_the_agent(linked: Rig) -> None:
    result = linked.power("node1", "on")
    assert result["status"] == "succeeded", result
    assert result["path"] == "ipmi"
    assert result["power_state"] == "on"
    boot = linked.api.post("devices/node2/boot", json={"device": "bios"})
    assert ok(boot)["status"] == "succeeded"
    on = linked.power("osim1", "on")  # OpenIPMI's ipmi_sim, inside the branch too
    assert on["status"] == "succeeded", on
    assert linked.openipmi.power() == "on"
    assert (
        ok(linked.api.post("devices/osim1/boot", json={"device": "pxe"}))["status"] == "succeeded"
    )
    assert linked.openipmi.boot() == "pxe"
    job = ok(linked.api.post("power", json={"select": "node[1-3],osim1", "action": "status"}), 202)
    finished = linked.job(job["id"])
    assert finished["status"] == "succeeded", finished
    audit = ok(linked.api.get("audit", params={"type": "agent.connected"}))
    assert any(event["target_name"] == "sh-br12/br12-a" for event in audit["items"])


def test_a_branch_hypervisor_is_synced_and_its_guests_powered_through_the_agent(
    linked: Rig,
) -> None:
    """The central cannot reach the branch's Xen host; its agent lists and drives the guests,
    and pins the host's key at the branch only."""
    synced = ok(linked.api.post("devices/hv1/sync"))
    assert (synced["listed"], synced["created"]) == (2, 2)
    assert ok(linked.api.get("devices/hv1-vm02"))["site"] == SITE
    on = linked.power("hv1-vm02", "on")
    assert (on["status"], on["path"], on["power_state"]) == ("succeeded", "libvirt", "on"), on
    guest = linked.fleet.control.request({"op": "guest", "hypervisor": "hv1", "guest": "hv1-vm02"})
    assert guest["state"]["domid"] is not None
    [ssh] = ok(linked.api.get("devices/hv1/paths"))
    assert ssh["options"]["host_key"] == linked.fleet.box("hv1").host_key


def _stream(rig: Rig, console: dict[str, Any]) -> Any:
    tls = ssl.create_default_context(cafile=str(rig.ca))
    url = rig.url.replace("https", "wss") + console["stream"]
    return connect(url, additional_headers={"Authorization": rig.api.headers["Authorization"]},
                   ssl=tls, open_timeout=20)  # fmt: skip


def _read_until(ws: Any, wanted: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(frame, bytes):
            seen += frame
    return seen


@pytest.mark.parametrize("via", ["ipmi", "console_port"])
def test_a_console_through_the_agent_is_recorded_at_the_central(linked: Rig, via: str) -> None:
    linked.power("node1", "on")
    console = ok(linked.api.post("devices/node1/consoles", json={"via": via}), 201)
    assert console["path"] == via
    with _stream(linked, console) as ws:
        ws.send(b"\r")
        _read_until(ws, b"node1 login: ")
        ws.send(b"root\r")
        _read_until(ws, b"Password: ")
        ws.send(b"secret\r")
        _read_until(ws, b"$ ")
        ws.send(b"exit\r")  # back at the login prompt for the next test
        _read_until(ws, b"logout")
    assert linked.status("br12-a")["status"] == "online"
    ok(linked.api.delete(f"consoles/{console['id']}"), 204)
    until(
        lambda: ok(linked.api.get(f"consoles/{console['id']}"))["status"] == "closed",
        "the console to close",
    )
    cast = linked.api.get(f"consoles/{console['id']}/recording")
    assert cast.status_code == 200
    assert b"node1 login: " in cast.content


def test_a_changed_host_key_is_refused_through_the_agent(linked: Rig) -> None:
    box = linked.fleet.boxes[0]
    paths = ok(linked.api.get(f"devices/{box.name}/paths"))
    ssh = next(p for p in paths if p["kind"] == "ssh")
    wrong = "SHA256:" + "A" * 43
    options = {"dialect": box.dialect, "host_key": wrong}
    ok(linked.api.patch(f"devices/{box.name}/paths/{ssh['id']}",
                        json={"options": options, "secret": box.password}))  # fmt: skip
    try:
        answer = linked.api.post("devices/node2/consoles", json={"via": "console_port"})
        assert answer.status_code == 502, answer.text
        assert "host key" in answer.json()["detail"]
    finally:
        options = {"dialect": box.dialect, "host_key": box.host_key}
        ok(linked.api.patch(f"devices/{box.name}/paths/{ssh['id']}",
                            json={"options": options, "secret": box.password}))  # fmt: skip


def test_no_user_credential_opens_the_link_and_the_agent_credential_opens_nothing_else(
    linked: Rig,
) -> None:
    credential = _credential(linked, "br12-a")
    tls = ssl.create_default_context(cafile=str(linked.ca))
    link = linked.url.replace("https", "wss") + "/api/v1/agents/link"
    user = linked.api.headers["Authorization"]
    with connect(link, additional_headers={"Authorization": user}, ssl=tls) as ws:
        ws.send(encode(Hello(PROTOCOL, "test", SITE, "br12-a")))
        refusal = _received(ws)
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusedBecause.CREDENTIAL
    for where in ("devices", "agents", "audit"):
        answer = httpx.get(
            f"{linked.url}/api/v1/{where}",
            headers={"Authorization": f"Bearer {credential}"},
            verify=str(linked.ca),
        )
        assert answer.status_code == 401, answer.text


def test_an_agent_is_refused_another_sites_hello_and_reports_it_was_not_given(
    linked: Rig,
) -> None:
    ok(linked.api.post("sites", json={"slug": "bj-dc9", "name": "B", "kind": "datacenter"}), 201)
    token = linked.enrol("br12-spy")["join_token"]
    joined = ok(httpx.post(f"{linked.url}/api/v1/agents/join", json={"join_token": token},
                           verify=str(linked.ca)))  # fmt: skip
    again = httpx.post(f"{linked.url}/api/v1/agents/join", json={"join_token": token},
                       verify=str(linked.ca))  # fmt: skip
    assert again.status_code == 401
    assert "already used" in again.json()["detail"]
    tls = ssl.create_default_context(cafile=str(linked.ca))
    link = linked.url.replace("https", "wss") + "/api/v1/agents/link"
    headers = {"Authorization": f"Bearer {joined['credential']}"}
    with connect(link, additional_headers=headers, ssl=tls) as ws:
        ws.send(encode(Hello(PROTOCOL, "test", "bj-dc9", "br12-spy")))
        refusal = _received(ws)
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusedBecause.SITE
    with connect(link, additional_headers=headers, ssl=tls) as ws:
        ws.send(encode(Hello(PROTOCOL, "test", SITE, "br12-spy")))
        _received(ws)  # welcome
        ws.send(encode(Report("someone-elses-task", TaskStatus.SUCCEEDED, message="done")))
        until(
            lambda: ok(linked.api.get("audit", params={"type": "agent.message_refused"}))["items"],
            "the refused report in the audit",
        )
    with connect(link, additional_headers=headers, ssl=tls) as ws:
        ws.send(encode(Hello(PROTOCOL + 1, "test", SITE, "br12-spy")))
        refusal = _received(ws)
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusedBecause.VERSION
    ok(linked.api.delete(f"agents/{joined['id']}"), 204)


def test_an_agent_killed_mid_job_loses_only_what_cannot_be_repeated(linked: Rig) -> None:
    """A cycle that was running is `lost`; a status re-sent to the site's other agent ends.

    node3 answers slowly (its cycle runs for seconds) and node2 not at all (its status is
    retried for seconds), while br12-a holds both; then br12-b comes and br12-a dies.
    """
    control, node2, node3 = linked.fleet.control, linked.fleet.machines[1], linked.fleet.machines[2]
    linked.power("node2", "status")  # a warm session: a mute BMC then times out, and is retried
    control.set_fault(node3.bmc.port, "slow", 4000)
    control.set_fault(node2.bmc.port, "mute")
    try:
        cycle = ok(linked.api.post("power", json={"select": "node3", "action": "cycle"}), 202)
        status = ok(linked.api.post("power", json={"select": "node2", "action": "status"}), 202)
        until(lambda: linked.tasks(cycle["id"])["node3"]["status"] == "running", "cycle running")
        held = ok(linked.api.post("devices/node1/consoles", json={"via": "ipmi"}), 201)
        linked.start_agent("br12-b")
        linked.wait_online("br12-b")
        linked.kill("br12-a")
        until(lambda: linked.tasks(cycle["id"])["node3"]["status"] != "running", "cycle ended")
        lost = linked.tasks(cycle["id"])["node3"]
        assert lost["status"] == "lost", lost
        assert "br12-a" in lost["message"]
        assert "lost its link" in lost["message"]
        control.set_fault(node2.bmc.port, "mute", False)
        assert linked.job(status["id"])["status"] == "succeeded"
        ended = ok(linked.api.get(f"consoles/{held['id']}"))
        assert ended["status"] == "closed"
        assert ended["close_reason"] == "agent"
        assert "br12-a" in ended["message"]
        again = ok(linked.api.post("devices/node1/consoles", json={"via": "ipmi"}), 201)
        with _stream(linked, again) as ws:  # re-opened through br12-b
            ws.send(b"\r")
            _read_until(ws, b"login: ")
        ok(linked.api.delete(f"consoles/{again['id']}"), 204)
    finally:
        control.set_fault(node3.bmc.port, "slow", 0)
        control.set_fault(node2.bmc.port, "mute", False)


def test_a_silent_agent_is_marked_offline_and_dials_again(linked: Rig) -> None:
    """A frozen agent (SIGSTOP) sends no heartbeat: after three (1 s each here) the central
    closes its link; thawed, the agent finds its link gone and dials again."""
    if "br12-b" not in linked.agents:
        linked.start_agent("br12-b")
    linked.wait_online("br12-b")

    def said_silent() -> bool:
        audit = ok(linked.api.get("audit", params={"type": "agent.disconnected"}))["items"]
        return any("silent" in event["details"].get("why", "") for event in audit)

    process = linked.agents["br12-b"]
    process.send_signal(signal.SIGSTOP)
    try:
        until(said_silent, "the silent link's end in the audit", 20)
        assert linked.status("br12-b")["status"] == "offline"
        result = linked.power("node1", "status")
        assert result["status"] == "failed"  # at once, never into the silent link
        assert "no agent of site sh-br12 is online (" in result["message"]
        assert "br12-b offline since" in result["message"]
    finally:
        process.send_signal(signal.SIGCONT)
    linked.wait_online("br12-b")
    assert linked.power("node1", "status")["status"] == "succeeded"


def test_revoked_agent_is_cut_off_and_its_site_fails_fast(linked: Rig) -> None:
    linked.start_agent("br12-a")  # its folder keeps the credential: no join token needed
    linked.wait_online("br12-a")
    for name in ("br12-a", "br12-b"):
        agent = linked.status(name)
        ok(linked.api.delete(f"agents/{agent['id']}"), 204)
        process = linked.agents.pop(name)
        assert process.wait(15) == 1  # a final refusal: the agent stops and says why
        assert linked.status(name)["status"] == "revoked"
    log = (linked.folder / "agent-br12-a.log").read_text()
    assert "revoked" in log
    for name in ("br12-a", "br12-b"):  # the secrets it was sent never reach its log
        said = (linked.folder / f"agent-{name}.log").read_text()
        assert linked.fleet.machines[0].bmc.password not in said
        assert linked.fleet.boxes[0].password not in said
    result = linked.power("node1", "status")
    assert result["status"] == "failed"
    assert "br12-a revoked at" in result["message"]
    again = linked.start_agent("br12-a")
    assert again.wait(15) == 1


def _credential(rig: Rig, name: str) -> str:
    import json

    return str(json.loads((rig.folder / f"agent-{name}" / "agent.json").read_text())["credential"])


def _received(ws: Any) -> Any:
    frame = ws.recv(timeout=10)
    return decode(frame if isinstance(frame, bytes) else frame.encode())
