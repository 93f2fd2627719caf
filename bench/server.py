"""Start a real `rackhand serve` for a benchmark, on a throwaway SQLite or PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from app.vault import generate_key

ADMIN_PASSWORD = "bench-admin-password"
POSTGRES = os.environ.get("RACKHAND_BENCH_POSTGRES", "postgres@127.0.0.1:5432")
# After the database name: `?host=/var/run/postgresql` reaches the server by its Unix socket.
POSTGRES_QUERY = os.environ.get("RACKHAND_BENCH_POSTGRES_QUERY", "")


@dataclass
class Server:
    url: str
    pid: int
    database_url: str
    token: str
    verify: ssl.SSLContext | bool = True  # what clients trust: on TLS, the private CA only

    @property
    def ws_url(self) -> str:
        """The same address for WebSockets (wss on TLS)."""
        return "ws" + self.url.removeprefix("http")

    def peak_rss_mib(self) -> float:
        """High-water mark of the server's resident memory (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(f"postgresql://{POSTGRES}/postgres{POSTGRES_QUERY}")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def temporary_database(backend: str) -> Iterator[str]:
    """An empty SQLite file or PostgreSQL database, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="rackhand-bench-") as folder:
        if backend == "sqlite":
            yield f"sqlite+aiosqlite:///{folder}/rackhand.db"
            return
        database = f"rackhand_bench_{uuid.uuid4().hex[:10]}"
        asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
        try:
            yield f"postgresql+asyncpg://{POSTGRES}/{database}{POSTGRES_QUERY}"
        finally:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@contextmanager
def running(
    backend: str,
    log: Path | None = None,
    *,
    tls: tuple[Path, Path, Path] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """A started central; its output goes to `log` when given (else nowhere). With `tls` (a CA,
    a certificate it signed for 127.0.0.1 and its key) it listens on HTTPS, trusted by the CA."""
    with (
        temporary_database(backend) as url,
        tempfile.TemporaryDirectory() as folder,
        open(log or os.devnull, "wb") as output,
    ):
        port = _free_port()
        command = [str(Path(sys.executable).parent / "rackhand"), "serve", "--port", str(port),
                   "--database-url", url, "--data-dir", folder]  # fmt: skip
        if tls is not None:
            command += ["--tls-cert", str(tls[1]), "--tls-key", str(tls[2])]
        process = subprocess.Popen(
            command,
            env=os.environ
            | {"RACKHAND_SECRET_KEY": generate_key(), "RACKHAND_ADMIN_PASSWORD": ADMIN_PASSWORD}
            | dict(env or {}),
            stdout=output,
            stderr=output,
        )
        base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        verify = ssl.create_default_context(cafile=str(tls[0])) if tls else True
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    if httpx.get(f"{base}/api/v1/readyz", verify=verify).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"rackhand serve did not start on {backend}")
            login = {"username": "admin", "password": ADMIN_PASSWORD}
            answer = httpx.post(f"{base}/api/v1/auth/token", data=login, verify=verify)
            answer.raise_for_status()
            yield Server(base, process.pid, url, answer.json()["access_token"], verify)
        finally:
            process.terminate()
            process.wait(timeout=30)
