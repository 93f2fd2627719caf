from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.inventory.demo import demo_fleet_args, seed_demo
from app.uow import unit_of_work
from app.vault import load_vault
from sim.__main__ import fleet_settings, parse_args
from tests.factories import ok


async def _seed(settings: Settings) -> bool:
    engine = make_engine(settings.database_url)
    async with unit_of_work(make_sessionmaker(engine, write=True)) as session:
        loaded = await seed_demo(session, load_vault(settings))
    await engine.dispose()
    return loaded


def test_demo_fleet_loads_once(client: TestClient, settings: Settings) -> None:
    assert asyncio.run(_seed(settings)) is True
    assert asyncio.run(_seed(settings)) is False
    devices = ok(client.get("devices", params={"limit": 1000}))["items"]
    kinds = {d["kind"] for d in devices}
    assert 30 <= len(devices) <= 50  # and the hypervisors' guests, at their first sync
    assert kinds == {
        "server",
        "network",
        "storage",
        "pdu",
        "kvm_switch",
        "console_server",
        "hypervisor",
    }
    assert [s["slug"] for s in ok(client.get("sites"))] == ["bj-dc1", "sh-br12"]
    web01 = ok(client.get("devices/web01"))
    assert [p["kind"] for p in web01["paths"]] == ["ipmi", "console_port", "pdu_outlet"]


def test_each_demo_server_names_its_simulated_machine(
    client: TestClient, settings: Settings
) -> None:
    """So the console of web01 greets as `web01 login:`, not as the simulator's `node16230`."""
    asyncio.run(_seed(settings))
    names = fleet_settings(parse_args(demo_fleet_args()))["names"]
    devices = ok(client.get("devices", params={"limit": 1000}))["items"]
    servers = [d["name"] for d in devices if d["kind"] == "server"]
    for server in servers:
        paths = ok(client.get(f"devices/{server}"))["paths"]
        bmc = next(p for p in paths if p["kind"] == "ipmi")
        assert names[bmc["port"]] == server
    assert len(names) == len(servers) == 24
