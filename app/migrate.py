"""Schema migrations, run by `rackhand serve` before it listens and by the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from app.vault import Vault

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str, vault: Vault | None = None) -> Config:
    """`vault`: the service key, for migrations that encrypt stored values (else the
    RACKHAND_* settings give it)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = url
    config.attributes["vault"] = vault
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str, revision: str = "head", vault: Vault | None = None) -> None:
    """Blocking (alembic runs its own event loop): call it before the server's loop starts."""
    command.upgrade(alembic_config(url, vault), revision)


def downgrade(url: str, revision: str = "base", vault: Vault | None = None) -> None:
    command.downgrade(alembic_config(url, vault), revision)
