"""A live Rackhand with a simulated rack behind it, and people to log in as, for the
dashboard's browser tests.

bj-dc1 (rack A01): node1..node4, each with an IPMI BMC, a console-server port (cs1, opengear)
and a PDU outlet (pdu1); sh-br12: br-web01 and br-web02 (no paths). People (password
`PEOPLE_PASSWORD`): admin (every site), olga (operator at bj-dc1), vera (viewer at bj-dc1),
sam (operator at sh-br12 only).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from app.config import Settings
from app.main import create_app
from app.migrate import upgrade
from tests.conftest import ADMIN_PASSWORD, SERVICE_KEY
from tests.factories import device, ok, path, rack, site
from tests.live import admin_token, in_a_thread, uvicorn_thread
from tests.sim.fleet import PASSWORD, RunningFleet, launch

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

    from agents.agent import Driver

PEOPLE_PASSWORD = "correct horse battery staple"
PEOPLE = {
    "olga": [{"role": "operator", "sites": ["bj-dc1"]}],
    "vera": [{"role": "viewer", "sites": ["bj-dc1"]}],
    "sam": [{"role": "operator", "sites": ["sh-br12"]}],
}
MACHINES = 4


@dataclass
class Dashboard:
    url: str
    fleet: RunningFleet
    api: httpx.Client  # the admin's bearer token, base URL /api/v1/
    data_dir: Path

    def log_in(
        self, context: BrowserContext, username: str, password: str = PEOPLE_PASSWORD
    ) -> None:
        """Log the browser context in through the API (the login page has its own test): the
        context's cookie jar then holds the session and CSRF cookies, as after the form."""
        response = context.request.post(
            f"{self.url}/api/v1/auth/login", data={"username": username, "password": password}
        )
        assert response.ok, response.text()


def _seed(api: httpx.Client, fleet: RunningFleet) -> None:
    site(api, "bj-dc1", name="Beijing DC1")
    site(api, "sh-br12", name="Shanghai branch 12", kind="branch")
    rack(api, "A01", "bj-dc1", height_u=42)
    wiring = fleet.control.wiring()
    for box in wiring["devices"]:
        kind = "console_server" if box["kind"] == "console_server" else "pdu"
        device(api, box["name"], kind=kind, rack="A01", position_u=40 if kind == "pdu" else 41)
        path(api, box["name"], kind="ssh", address=box["address"], port=box["port"],
             username=box["username"], secret=box["password"],
             options={"dialect": box["dialect"]})  # fmt: skip
    for n, machine in enumerate(wiring["machines"], start=1):
        name = f"node{n}"
        device(api, name, rack="A01", position_u=2 * n, height_u=2, tags=["web"])
        path(api, name, kind="ipmi", address="127.0.0.1", port=machine["bmc_port"],
             username="admin", secret=PASSWORD, options={"cipher_suite": 3})  # fmt: skip
        path(api, name, kind="console_port", via=machine["console"]["server"],
             port=machine["console"]["port"])  # fmt: skip
        path(api, name, kind="pdu_outlet", via=machine["pdu"][0]["pdu"],
             outlets=[machine["pdu"][0]["outlet"]])  # fmt: skip
    for name in ("br-web01", "br-web02"):
        device(api, name, site="sh-br12")
    for username, grants in PEOPLE.items():
        body: dict[str, Any] = {"username": username, "password": PEOPLE_PASSWORD, "grants": grants}
        ok(api.post("users", json=body), 201)


@contextmanager
def live_dashboard(
    folder: Path,
    *,
    post_seconds: float = 6.0,
    drivers: Mapping[str, Driver] | None = None,
    **settings: Any,
) -> Iterator[Dashboard]:
    """Start the fleet and Rackhand (SQLite in `folder`), seed them; `settings` override the
    app's (e.g. `poll_power=True`), `drivers` its built-in agent's (all of them: a test that
    gives the fake one reaches no simulated device through the others)."""
    fleet = launch(MACHINES, "--console-servers", "1", "--console-ports", str(MACHINES),
                   "--console-dialect", "opengear", "--pdus", "1", "--pdu-outlets",
                   str(MACHINES), "--pdu-dialect", "raritan_px", "--pdu-cycle-delay", "0.3",
                   "--post-seconds", str(post_seconds))  # fmt: skip
    try:
        url = f"sqlite+aiosqlite:///{folder / 'dashboard.db'}"
        in_a_thread(upgrade, url)  # the shared Chromium may be open
        app_settings = Settings(
            database_url=url,
            data_dir=folder,
            secret_key=SERVICE_KEY,
            admin_password=ADMIN_PASSWORD,
            **({"poll_power": False} | settings),
        )
        with uvicorn_thread(create_app(app_settings, drivers)) as base:
            token = admin_token(base)
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=f"{base}/api/v1/", headers=headers, timeout=30) as api:
                _seed(api, fleet)
                yield Dashboard(base, fleet, api, folder)
    finally:
        fleet.stop()
