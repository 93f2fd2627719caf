"""Appends stay one chain with many concurrent writers in two server processes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from app.config import Settings
from tests.live import admin_token, rackhand_serve

WRITERS = 16
EACH = 10


def test_two_processes_many_writers_one_valid_chain(settings: Settings, tmp_path: Path) -> None:
    with (
        rackhand_serve(settings.database_url, tmp_path / "a") as first,
        rackhand_serve(settings.database_url, tmp_path / "b") as second,
    ):
        token = admin_token(first)
        auth = {"Authorization": f"Bearer {token}"}
        httpx.post(f"{first}/api/v1/sites", json={"slug": "bj-dc1", "name": "B"}, headers=auth)

        def write(writer: int) -> list[int]:
            url = first if writer % 2 else second
            with httpx.Client(base_url=f"{url}/api/v1", headers=auth, timeout=60) as client:
                return [
                    client.post("devices", json={
                        "name": f"w{writer:02d}-n{n:02d}", "kind": "server", "site": "bj-dc1",
                    }).status_code
                    for n in range(EACH)
                ]  # fmt: skip

        with ThreadPoolExecutor(WRITERS) as pool:
            statuses = [status for batch in pool.map(write, range(WRITERS)) for status in batch]
        assert statuses == [201] * (WRITERS * EACH)
        verdict = httpx.get(f"{second}/api/v1/audit/verify", headers=auth).json()
    # bootstrap user + login + site + one event per device
    assert verdict == {"ok": True, "checked": 3 + WRITERS * EACH, "first_bad": None}
