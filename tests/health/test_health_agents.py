"""Health reads through a site agent's link, and an agent that lies about them: a health answer
for a power task, or for a task never given, is refused and audited, never stored."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from agents.drivers.fake import FakeDriver
from agents.protocol import (
    PROTOCOL,
    HealthData,
    HealthOrder,
    HealthRead,
    HealthReport,
    Hello,
    PowerOrder,
    Sensor,
    SensorState,
    TaskStatus,
    Welcome,
    decode,
    encode,
)
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, site
from tests.live import until

FAILED_FAN = HealthData(sensors=(Sensor("Fan2", "Fan", SensorState.CRITICAL, 0.0, "RPM"),))


@pytest.fixture
def branch(settings: Settings) -> Iterator[TestClient]:
    """sh-br12, served by its own agent br12-a, with br-web01 (ipmi)."""
    quiet = settings.model_copy(update={"poll_power": False, "poll_health": False})
    with TestClient(create_app(quiet, drivers={"ipmi": FakeDriver()})) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "sh-br12", kind="branch")
        device(client, "br-web01", site="sh-br12")
        path(client, "br-web01", kind="ipmi", address="10.0.0.1", username="u", secret="s")
        yield client


def connected(client: TestClient) -> Any:
    enrolled = ok(client.post("agents", json={"site": "sh-br12", "name": "br12-a"}), 201)
    join = {"join_token": enrolled["join_token"]}
    credential = ok(client.post("agents/join", json=join))["credential"]
    link = {"Authorization": f"Bearer {credential}"}
    return client.websocket_connect("/api/v1/agents/link", headers=link)


def hello(ws: WebSocketTestSession) -> None:
    ws.send_bytes(encode(Hello(PROTOCOL, "test", "sh-br12", "br12-a")))
    assert isinstance(decode(ws.receive_bytes()), Welcome)


def test_a_sites_agent_reads_its_bmcs_health(branch: TestClient) -> None:
    with connected(branch) as ws, ThreadPoolExecutor(1) as pool:
        hello(ws)
        read = pool.submit(branch.get, "devices/br-web01/sensors")
        order = decode(ws.receive_bytes())
        assert isinstance(order, HealthOrder)
        assert (order.read, order.site, order.paths[0].kind) == (
            HealthRead.SENSORS,
            "sh-br12",
            "ipmi",
        )
        ws.send_bytes(encode(HealthReport(order.task_id, TaskStatus.SUCCEEDED, FAILED_FAN, "ipmi")))
        answer = ok(read.result(30))
    assert (answer["health"], answer["sensors"][0]["name"]) == ("critical", "Fan2")


def test_health_answers_for_other_tasks_are_refused_and_never_stored(branch: TestClient) -> None:
    with connected(branch) as ws, ThreadPoolExecutor(1) as pool:
        hello(ws)
        body = {"action": "status", "wait": 0}
        pool.submit(branch.post, "devices/br-web01/power", json=body).result(30)
        order = decode(ws.receive_bytes())
        assert isinstance(order, PowerOrder)
        lie = HealthReport(order.task_id, TaskStatus.SUCCEEDED, FAILED_FAN, "ipmi")
        ws.send_bytes(encode(lie))
        ws.send_bytes(encode(HealthReport("never-given", TaskStatus.SUCCEEDED, FAILED_FAN)))

        def refused() -> list[dict[str, Any]]:
            audit = ok(branch.get("audit", params={"type": "agent.message_refused"}))
            return audit["items"]  # type: ignore[no-any-return]

        until(lambda: len(refused()) == 2, "both refusals in the audit")
    whats = sorted(event["details"]["what"] for event in refused())
    assert whats == [
        "a report about a task it was not given",
        "an answer to a question it was not asked",
    ]
    verdict = ok(branch.get("devices/br-web01/health", params={"cached": "true"}))
    assert verdict["health"] == "unknown"
    assert verdict["checked_at"] is None
