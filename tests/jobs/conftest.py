"""A started app whose built-in agent drives the fake driver (the API's rules, not a BMC's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from agents.drivers.fake import FakeDriver
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, path, site


@pytest.fixture
def fake() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def fleet(settings: Settings, fake: FakeDriver) -> Iterator[TestClient]:
    """Admin client; site bj-dc1 with web01..web05, each with an ipmi path 10.0.0.N."""
    quiet = settings.model_copy(update={"poll_power": False})  # tests drive the poller
    app = create_app(quiet, drivers={"ipmi": fake})
    with TestClient(app, raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        for n in range(1, 6):
            device(client, f"web{n:02d}", tags=["web"])
            path(client, f"web{n:02d}", kind="ipmi", address=f"10.0.0.{n}", username="u",
                 secret="bmc-secret")  # fmt: skip
        yield client
