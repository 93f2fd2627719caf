"""`rackhand serve` options: TLS, and refusing a production database without a key."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.live import RACKHAND, free_port

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_serve_over_tls(tmp_path: Path) -> None:
    """Also: a first start's files are the service user's only, and a TLS key every user of
    the host can read is named in a warning (it is the operator's file: left as it is)."""
    cert, key = _self_signed(tmp_path)
    key.chmod(0o644)
    port = free_port()
    process = subprocess.Popen(
        [
            RACKHAND,
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "var"),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    context = ssl.create_default_context(cafile=str(cert))
    try:
        for _ in range(100):
            try:
                response = httpx.get(f"https://127.0.0.1:{port}/api/v1/healthz", verify=context)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response.json() == {"status": "ok"}
        data = tmp_path / "var"
        files = ["secret.key", "rackhand.db", "rackhand.db-wal", "rackhand.db-shm"]
        modes = {name: (data / name).stat().st_mode & 0o777 for name in [".", *files]}
        assert modes == {".": 0o700} | dict.fromkeys(files, 0o600)
        status = Path(f"/proc/{process.pid}/status")
        if status.exists():
            assert "Umask:\t0077" in status.read_text()
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert f"https://127.0.0.1:{port}/api/v1/docs" in output
    assert f"the TLS key {key} is open to every user of this host (mode 0644)" in output
    assert key.stat().st_mode & 0o777 == 0o644


def test_postgres_without_a_key_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RACKHAND_SECRET_KEY"}
    result = subprocess.run(
        [
            RACKHAND,
            "serve",
            "--database-url",
            "postgresql+asyncpg://postgres@127.0.0.1/rackhand_never_created",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "RACKHAND_SECRET_KEY is required" in result.stderr
