"""Real `rackhand serve` processes for tests that must cross a process boundary."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, SERVICE_KEY

RACKHAND = str(Path(sys.executable).parent / "rackhand")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def rackhand_serve(database_url: str, data_dir: Path) -> Iterator[str]:
    """Start `rackhand serve` on the database; yields its URL once it answers."""
    port = free_port()
    env = os.environ | {
        "RACKHAND_SECRET_KEY": SERVICE_KEY,
        "RACKHAND_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    command = [RACKHAND, "serve", "--port", str(port), "--database-url", database_url,
               "--data-dir", str(data_dir)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{url}/api/v1/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            process.kill()
            pytest.fail(f"rackhand serve did not start: {process.communicate()[0].decode()}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def admin_token(url: str) -> str:
    login = {"username": "admin", "password": ADMIN_PASSWORD}
    response = httpx.post(f"{url}/api/v1/auth/token", data=login)
    response.raise_for_status()
    return str(response.json()["access_token"])
