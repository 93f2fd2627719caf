"""`rackhand tokens` and `rackhand audit` against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from app.db import make_engine
from tests.cli.conftest import Run
from tests.conftest import ADMIN_PASSWORD
from tests.live import RACKHAND

# One worker runs the module: its tests share one `rackhand serve` per database.
pytestmark = pytest.mark.xdist_group("cli-serve")


def test_token_created_from_a_password_then_used(rackhand: Run, server: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RACKHAND_TOKEN"} | {
        "RACKHAND_URL": server,
        "RACKHAND_USERNAME": "admin",
        "RACKHAND_PASSWORD": ADMIN_PASSWORD,
    }
    created = subprocess.run(
        [RACKHAND, "tokens", "create", "branch-power", "--role", "operator", "--site", "bj-dc1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("rh_")
    assert "only time" in created.stderr
    listed = subprocess.run(
        [RACKHAND, "devices", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"RACKHAND_URL": server, "RACKHAND_TOKEN": token},
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    tokens = json.loads(rackhand("tokens", "list", "--json").stdout)
    assert [t["name"] for t in tokens] == ["branch-power"]


async def _tamper(url: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE audit_event SET actor_name = 'x' WHERE seq = 2"))
    await engine.dispose()


def test_audit_list_verify_export(rackhand: Run, database_url: str, tmp_path: Path) -> None:
    listed = rackhand("audit", "list", "--type", "site.*", "--json")
    assert [e["type"] for e in json.loads(listed.stdout)] == ["site.created"]
    intact = rackhand("audit", "verify")
    assert intact.returncode == 0
    assert "intact" in intact.stdout
    exported = tmp_path / "audit.jsonl"
    assert rackhand("audit", "export", "-o", str(exported)).returncode == 0
    assert len(exported.read_text().splitlines()) >= 3
    asyncio.run(_tamper(database_url))
    broken = rackhand("audit", "verify")
    assert broken.returncode == 1
    assert "BROKEN at event #2" in broken.stderr
