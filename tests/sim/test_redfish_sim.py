"""The Redfish simulator against independent clients: curl, pyghmi's Redfish Command, ssl."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pyghmi.redfish.command import Command  # type: ignore[import-untyped]

from sim.machine import BootDevice, BootOverride, Power, Timing
from sim.redfish import RedfishFleet, start_redfish_fleet
from tests.sim.console import free_tcp_ports

USER, PASSWORD = "admin", "s3cret"
FAST = Timing(on_delay=0.05, cycle_off=0.1, soft_delay=0.05)


async def start_fleet(count: int = 1) -> RedfishFleet:
    """A fleet on free ports, trying again if another test took them in between."""
    for _ in range(5):
        try:
            return await start_redfish_fleet(
                count, free_tcp_ports(count), USER, PASSWORD, timing=FAST
            )
        except OSError:
            continue
    raise RuntimeError("could not start a Redfish fleet")


def with_fleet(test: Callable[[RedfishFleet, int], Awaitable[None]], count: int = 1) -> None:
    async def main() -> None:
        fleet = await start_fleet(count)
        try:
            await test(fleet, fleet.ports[0])
        finally:
            await fleet.close()

    asyncio.run(main())


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


async def curl(url: str, *args: str, auth: str | None = f"{USER}:{PASSWORD}") -> Answer:
    """One request with curl -k (an HTTP client that shares nothing with the simulator)."""
    options = ["-sk", "--max-time", "5", "-D", "-", "-w", "\n%{http_code}"]
    if auth:
        options += ["-u", auth]
    process = await asyncio.create_subprocess_exec(
        "curl", *options, *args, url, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    head, _, rest = out.decode().partition("\r\n\r\n")
    body, _, code = rest.rpartition("\n")
    headers = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(code), headers, json.loads(body) if body else None)


def system_url(fleet: RedfishFleet, port: int) -> str:
    return f"{fleet.url(port)}/redfish/v1/Systems/1"


def test_curl_reads_the_root_without_credentials_and_the_system_with_them() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        root = await curl(f"{fleet.url(port)}/redfish/v1/", auth=None)
        assert root.status == 200
        assert root.body["Systems"] == {"@odata.id": "/redfish/v1/Systems"}
        assert (await curl(system_url(fleet, port), auth=None)).status == 401
        assert (await curl(system_url(fleet, port), auth=f"{USER}:wrong")).status == 401
        system = await curl(system_url(fleet, port))
        assert system.status == 200
        assert system.body["PowerState"] == "Off"
        assert (
            "Nmi"
            in system.body["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"]
        )

    with_fleet(test)


def test_a_session_token_stands_for_the_password() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        sessions = f"{fleet.url(port)}/redfish/v1/SessionService/Sessions"
        login = json.dumps({"UserName": USER, "Password": PASSWORD})
        created = await curl(sessions, "-X", "POST", "-d", login, auth=None)
        assert created.status == 201
        token = created.headers["x-auth-token"]
        answer = await curl(system_url(fleet, port), "-H", f"X-Auth-Token: {token}", auth=None)
        assert answer.status == 200
        assert fleet.bmc(port).logins == 1
        wrong = json.dumps({"UserName": USER, "Password": "nope"})
        assert (await curl(sessions, "-X", "POST", "-d", wrong, auth=None)).status == 401

    with_fleet(test)


def test_reset_actions_drive_the_machine_and_bad_ones_get_a_redfish_error() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        reset = f"{system_url(fleet, port)}/Actions/ComputerSystem.Reset"
        machine = fleet.machine(port)
        assert (await curl(reset, "-X", "POST", "-d", '{"ResetType": "On"}')).status == 204
        await asyncio.sleep(FAST.on_delay * 2)
        assert (await curl(system_url(fleet, port))).body["PowerState"] == "On"
        assert (await curl(reset, "-X", "POST", "-d", '{"ResetType": "PowerCycle"}')).status == 204
        assert machine.counters["cycle"] == 1
        bad = await curl(reset, "-X", "POST", "-d", '{"ResetType": "Explode"}')
        assert bad.status == 400
        assert bad.body["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith(
            "ActionParameterValueNotInList"
        )
        fleet.bmc(port).resets.remove("Nmi")
        assert (await curl(reset, "-X", "POST", "-d", '{"ResetType": "Nmi"}')).status == 400
        assert machine.counters["diag"] == 0
        machine.press(Power.OFF)
        off = await curl(reset, "-X", "POST", "-d", '{"ResetType": "ForceRestart"}')
        assert off.status == 409
        assert "powered off" in off.body["error"]["message"]

    with_fleet(test)


def test_patching_boot_sets_the_machine_override() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        machine = fleet.machine(port)
        once = {"Boot": {"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe"}}
        answer = await curl(system_url(fleet, port), "-X", "PATCH", "-d", json.dumps(once))
        assert answer.status == 200
        assert answer.body["Boot"]["BootSourceOverrideTarget"] == "Pxe"
        assert machine.boot == BootOverride(BootDevice.PXE, persistent=False)
        machine.press(Power.ON)  # the override is used by that boot, then cleared
        assert machine.boot_log[-1].device is BootDevice.PXE
        boot = (await curl(system_url(fleet, port))).body["Boot"]
        assert boot["BootSourceOverrideEnabled"] == "Disabled"
        bad = {"Boot": {"BootSourceOverrideTarget": "Tape"}}
        answer = await curl(system_url(fleet, port), "-X", "PATCH", "-d", json.dumps(bad))
        assert answer.status == 400

    with_fleet(test)


def test_pyghmi_redfish_command_works_against_it() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        def use() -> None:
            seen: list[str] = []

            def pin(certificate: bytes) -> bool:
                seen.append(hashlib.sha256(certificate).hexdigest())
                return True

            command = Command("127.0.0.1", USER, PASSWORD, verifycallback=pin, port=port)
            assert command.get_power() == {"powerstate": "off"}
            command.set_power("on")
            time.sleep(FAST.on_delay * 2)
            assert command.get_power() == {"powerstate": "on"}
            command.set_bootdev("setup", persist=True)
            assert set(seen) == {fleet.fingerprint}

        await asyncio.to_thread(use)
        assert fleet.machine(port).boot == BootOverride(BootDevice.BIOS, True, efi=True)
        assert fleet.bmc(port).logins == 1

    with_fleet(test)


def test_the_fingerprint_is_that_of_the_certificate_served() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port))
        assert hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest() == fleet.fingerprint

    with_fleet(test, count=2)


def test_faults_refuse_passwords_and_slow_down() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        faults = fleet.bmc(port).faults
        faults.refuse_password = True
        assert (await curl(system_url(fleet, port))).status == 401
        faults.refuse_password = False
        faults.slow_ms = 300
        started = time.monotonic()
        assert (await curl(system_url(fleet, port))).status == 200
        assert time.monotonic() - started >= 0.3

    with_fleet(test)


def test_a_mute_bmc_accepts_tcp_but_never_finishes_the_tls_handshake() -> None:
    async def test(fleet: RedfishFleet, port: int) -> None:
        fleet.bmc(port).faults.mute = True
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connecting = asyncio.open_connection("127.0.0.1", port, ssl=context)
        try:
            await asyncio.wait_for(connecting, 0.5)
        except TimeoutError:
            return
        raise AssertionError("a mute BMC completed a TLS handshake")

    with_fleet(test)


def test_the_command_line_serves_until_sigterm() -> None:
    async def test() -> None:
        base = free_tcp_ports(2)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sim.redfish",
            *("--count", "2", "--base-port", str(base), "--password", PASSWORD),
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        fingerprint = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        listening = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        assert fingerprint.startswith("fingerprint: ")
        assert listening == f"listening: 2 Redfish BMCs on 127.0.0.1:{base}-{base + 1}\n"
        answer = await curl(f"https://127.0.0.1:{base + 1}/redfish/v1/Systems/1")
        assert answer.body["PowerState"] == "Off"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0

    asyncio.run(test())
