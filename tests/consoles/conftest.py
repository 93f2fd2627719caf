"""An app whose built-in agent opens consoles on the fake driver (the broker, not a device)."""

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
def consoles(settings: Settings, fake: FakeDriver) -> Iterator[TestClient]:
    """Admin client; web01 with an ipmi path (10.0.0.1), web02 on port 3 of console server cs-01."""
    quiet = settings.model_copy(update={"poll_power": False, "console_linger_seconds": 30.0})
    app = create_app(quiet, drivers={"ipmi": fake, "console_port": fake})
    with TestClient(app, raise_server_exceptions=False) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        site(client, "bj-dc1")
        device(client, "web01")
        path(client, "web01", kind="ipmi", address="10.0.0.1", username="u", secret="bmc-secret")
        device(client, "web02")
        device(client, "cs-01", kind="console_server")
        path(client, "cs-01", kind="ssh", address="10.0.0.5", username="admin", secret="cs-pw",
             options={"dialect": "opengear"})  # fmt: skip
        path(client, "web02", kind="console_port", via="cs-01", port=3)
        yield client
