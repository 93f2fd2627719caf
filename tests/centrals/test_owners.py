"""Two centrals on one database: each ends only the work of a central that is gone, a final
state is never overwritten, and a job finishes (and `job.finished` is sent) once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from agents.drivers.fake import FakeDriver
from agents.protocol import Path as DevicePath
from agents.protocol import PowerAction, PowerState
from app.centrals.models import Central
from app.config import Settings
from app.db import make_engine, make_sessionmaker, utcnow
from app.main import create_app
from app.webhooks.models import Delivery
from tests.conftest import ADMIN_PASSWORD, login
from tests.factories import device, ok, path, site


class GatedDriver(FakeDriver):
    """The fake driver, holding every power action until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    async def power(self, path: DevicePath, action: PowerAction) -> PowerState:
        await asyncio.to_thread(self.gate.wait, 20)
        return await super().power(path, action)


@contextmanager
def started(
    settings: Settings, folder: Path, driver: FakeDriver, beat: float
) -> Iterator[TestClient]:
    """A central on the shared database, with its own data folder and heartbeat."""
    mine = settings.model_copy(
        update={"data_dir": folder, "heartbeat_seconds": beat, "poll_power": False}
    )
    with TestClient(create_app(mine, drivers={"ipmi": driver})) as client:
        client.base_url = client.base_url.join("/api/v1/")
        client.headers["Authorization"] = f"Bearer {login(client, 'admin', ADMIN_PASSWORD)}"
        yield client


def _sql(settings: Settings, work: Callable[[Any], Any]) -> Any:
    async def run() -> Any:
        engine = make_engine(settings.database_url)
        try:
            async with make_sessionmaker(engine, write=True)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _dies(settings: Settings, client: TestClient) -> None:
    """The central stops beating, as a killed process does: its heartbeat grows old."""
    gone = utcnow() - timedelta(hours=12)  # three of its 3,600 s beats, and more
    central = client.app.state.presence.id  # type: ignore[attr-defined]
    _sql(
        settings,
        lambda s: s.execute(update(Central).where(Central.id == central).values(heartbeat_at=gone)),
    )


def _finished_hooks(settings: Settings, job_id: str) -> int:
    query = select(func.count()).where(Delivery.event == "job.finished", Delivery.subject == job_id)
    return int(_sql(settings, lambda s: s.scalar(query)))


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _events(client: TestClient, job_id: str, prefix: str) -> list[str]:
    items = ok(client.get("audit", params={"limit": 500, "type": f"{prefix}.*"}))["items"]
    return [e["type"] for e in reversed(items) if e["job_id"] == job_id]


def test_a_starting_central_leaves_a_live_ones_task_alone_and_ends_it_once_that_one_is_gone(
    settings: Settings, tmp_path: Path
) -> None:
    gated = GatedDriver()
    with started(settings, tmp_path / "first", gated, beat=3600) as first:
        site(first, "bj-dc1")
        device(first, "web01")
        path(first, "web01", kind="ipmi", address="10.0.0.1", username="u", secret="s")
        hook = {
            "url": "https://tickets.example.com/hooks",
            "secret": "s" * 16,
            "events": ["job.finished"],
        }
        ok(first.post("webhooks", json=hook), 201)
        job = ok(first.post("power", json={"select": "web01", "action": "on"}), 202)["id"]
        _until(lambda: ok(first.get(f"jobs/{job}"))["tasks"][0]["status"] == "running", "running")

        with started(settings, tmp_path / "second", FakeDriver(), beat=0.1) as second:
            seen = ok(second.get(f"jobs/{job}"))
            assert (seen["status"], seen["tasks"][0]["status"]) == ("running", "running")
            time.sleep(0.5)  # five of the second's heartbeats and sweeps: still not its to end
            assert ok(second.get(f"jobs/{job}"))["tasks"][0]["status"] == "running"

            _dies(settings, first)
            _until(lambda: ok(second.get(f"jobs/{job}"))["status"] != "running", "recovered")
            ended = ok(second.get(f"jobs/{job}"))
            assert (ended["status"], ended["tasks"][0]["status"]) == ("failed", "lost")
            assert "stopped: no heartbeat since" in ended["tasks"][0]["message"]
            assert "not re-run" in ended["tasks"][0]["message"]

            gated.gate.set()  # the device answers after all; the first central reports it
            engine = first.app.state.jobs  # type: ignore[attr-defined]
            _until(lambda: not engine.running(job), "the first central took the job's end")
            after = ok(second.get(f"jobs/{job}"))
            assert (after["status"], after["tasks"][0]["status"]) == ("failed", "lost")
            assert _events(second, job, "power") == ["power.requested", "power.lost"]
            assert _finished_hooks(settings, job) == 1


def test_a_recovery_never_overwrites_a_final_state(settings: Settings, tmp_path: Path) -> None:
    with started(settings, tmp_path / "first", FakeDriver(), beat=3600) as first:
        site(first, "bj-dc1")
        device(first, "web01")
        path(first, "web01", kind="ipmi", address="10.0.0.1", username="u", secret="s")
        hook = {
            "url": "https://tickets.example.com/hooks",
            "secret": "s" * 16,
            "events": ["job.finished"],
        }
        ok(first.post("webhooks", json=hook), 201)
        answer = ok(first.post("devices/web01/power", json={"action": "on"}))
        assert answer["status"] == "succeeded"
        _dies(settings, first)
        with started(settings, tmp_path / "second", FakeDriver(), beat=0.1) as second:
            time.sleep(0.5)  # its start-up recovery and five sweeps
            job = ok(second.get(f"jobs/{answer['job']}"))
            assert (job["status"], job["tasks"][0]["status"]) == ("succeeded", "succeeded")
            assert _events(second, job["id"], "power") == ["power.requested", "power.succeeded"]
            assert _finished_hooks(settings, job["id"]) == 1


def test_a_console_of_a_live_central_stays_open_and_one_of_a_gone_central_ends_once(
    settings: Settings, tmp_path: Path
) -> None:
    with started(settings, tmp_path / "first", FakeDriver(), beat=3600) as first:
        site(first, "bj-dc1")
        device(first, "web01")
        path(first, "web01", kind="ipmi", address="10.0.0.1", username="u", secret="s")
        console = ok(first.post("devices/web01/consoles", json={"via": "ipmi"}), 201)["id"]
        with started(settings, tmp_path / "second", FakeDriver(), beat=0.1) as second:
            time.sleep(0.5)
            assert ok(second.get(f"consoles/{console}"))["status"] == "open"
            _dies(settings, first)
            _until(lambda: ok(second.get(f"consoles/{console}"))["status"] != "open", "ended")
            row = ok(second.get(f"consoles/{console}"))
            assert (row["status"], row["close_reason"]) == ("closed", "lost")
    # The first central closed its session at its stop: the end stays the second's.
    with started(settings, tmp_path / "third", FakeDriver(), beat=3600) as third:
        row = ok(third.get(f"consoles/{console}"))
        assert (row["status"], row["close_reason"]) == ("closed", "lost")
        closes = [
            e for e in ok(third.get("audit", params={"limit": 500, "type": "console.*"}))["items"]
            if e["type"] == "console.closed"
        ]  # fmt: skip
        assert len(closes) == 1
