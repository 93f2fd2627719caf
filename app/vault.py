"""Encryption at rest for device secrets (BMC passwords, SSH keys) with the service key."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import Settings
from app.datafiles import create_private, private_folder
from app.errors import ConfigError

log = logging.getLogger(__name__)

KEY_FILE = "secret.key"


class Vault:
    """Fernet (AES-128-CBC + HMAC-SHA256); the first key encrypts, every key decrypts."""

    def __init__(self, keys: list[bytes]) -> None:
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:
            raise ConfigError(
                "RACKHAND_SECRET_KEY must be one or more comma-separated Fernet keys "
                "(32 url-safe base64 bytes, e.g. from `rackhand keygen`)"
            ) from exc

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken as exc:
            raise ConfigError(
                "a stored secret cannot be decrypted with the configured service key"
            ) from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()


def load_vault(settings: Settings) -> Vault:
    """Key from the environment; the embedded default may generate one in the data folder."""
    if settings.secret_key is not None:
        raw = settings.secret_key.get_secret_value()
        return Vault([part.strip().encode() for part in raw.split(",") if part.strip()])
    if not settings.is_embedded:
        raise ConfigError(
            "RACKHAND_SECRET_KEY is required with an external database: every replica must "
            "share the key that encrypts device secrets (create one with `rackhand keygen`)"
        )
    return Vault([_key_file(settings.data_dir)])


def _key_file(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    private_folder(data_dir)
    key = Fernet.generate_key()
    with os.fdopen(create_private(path), "wb") as handle:
        handle.write(key + b"\n")
    log.warning(
        "generated a new service key in %s; back it up, device secrets cannot be read "
        "without it (set RACKHAND_SECRET_KEY in production)",
        path,
    )
    return key
