"""Real `rackhand serve` processes for tests that must cross a process boundary."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from tests.conftest import ADMIN_PASSWORD, SERVICE_KEY

T = TypeVar("T")
RACKHAND = str(Path(sys.executable).parent / "rackhand")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def rackhand_serve(
    database_url: str, data_dir: Path, tls: tuple[Path, Path] | None = None
) -> Iterator[str]:
    """Start `rackhand serve` on the database (HTTPS with `tls`, a certificate and its key);
    yields its URL once it answers."""
    port = free_port()
    env = os.environ | {
        "RACKHAND_SECRET_KEY": SERVICE_KEY,
        "RACKHAND_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    command = [RACKHAND, "serve", "--port", str(port), "--database-url", database_url,
               "--data-dir", str(data_dir)]  # fmt: skip
    if tls is not None:
        command += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    # Its output in a file, not a pipe: a server a module long would fill a pipe no one reads.
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        try:
            if not _answers(process, url):
                process.kill()
                process.wait()
                output.seek(0)
                pytest.fail(f"rackhand serve did not start: {output.read().decode()}")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            finally:
                process.kill()


def _answers(process: subprocess.Popen[bytes], url: str, timeout: float = 60.0) -> bool:
    """Whether the server answers within `timeout` (False at once if it exited)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:  # only whether it answers: the tests check the certificate themselves
            if httpx.get(f"{url}/api/v1/readyz", verify=False).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def until(done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for a condition (polled; the bound is generous for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def uvicorn_thread(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn in a thread (uvloop and httptools, as `rackhand serve`), for
    tests that need a socket and the app's state at once; yields its URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def in_a_thread(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` on a thread of its own: it may `asyncio.run` (a migration does) while
    this thread has a loop running, as it has while the shared Chromium is open."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def admin_token(url: str) -> str:
    login = {"username": "admin", "password": ADMIN_PASSWORD}
    response = httpx.post(f"{url}/api/v1/auth/token", data=login)
    response.raise_for_status()
    return str(response.json()["access_token"])


def private_ca(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A CA of our own and a certificate it signed for `host` (an address or a DNS name):
    (CA, certificate, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rackhand test CA")])
    ca = (
        _certificate(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        _certificate(name, ca_name, key.public_key(), now)
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
