"""What `rackhand serve` does around uvicorn: the first start's data, and the last word.

The operator's first question is where to go and how to log in, so that comes last, once the
server listens, below uvicorn's own start-up lines.
"""

from __future__ import annotations

import logging
import socket
import stat
from pathlib import Path

import typer
import uvicorn

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.identity.service import bootstrap_admin
from app.inventory.demo import LocalLibvirt, seed_demo
from app.uow import unit_of_work
from app.vault import load_vault


def check_tls_key(path: Path | None) -> None:
    """Warn when every user of the host can read the TLS key. It is the operator's file, so it
    is not changed (a key 0640 for a group such as Debian's ssl-cert is fine)."""
    if path is None or not path.is_file():
        return  # uvicorn says what is wrong with it
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o007:
        logging.getLogger("rackhand").warning(
            "the TLS key %s is open to every user of this host (mode %04o): chmod o-rwx it",
            path,
            mode,
        )


async def prepare(settings: Settings, demo: bool, local: LocalLibvirt | None = None) -> str | None:
    """The demo catalogue (into an empty one, if asked) and the first `admin`.

    Returns the admin's password when it was generated, for the last word: the app's own start
    finds the admin made and says nothing.
    """
    password = settings.admin_password.get_secret_value() if settings.admin_password else None
    engine = make_engine(settings.database_url)
    try:
        async with unit_of_work(make_sessionmaker(engine, write=True)) as session:
            if demo and await seed_demo(session, load_vault(settings), local):
                logging.getLogger("rackhand").info("loaded the demo catalogue")
            return await bootstrap_admin(session, password)
    finally:
        await engine.dispose()


def last_word(url: str, password: str | None, demo: str | None) -> list[str]:
    """Where the dashboard and the API docs are, and how to log in (with the generated
    password, the only time it shows)."""
    if password:
        login = f"admin, password: {password}  (shown once; RACKHAND_ADMIN_PASSWORD chooses it)"
    else:
        login = "admin with the password shown at its first start (or RACKHAND_ADMIN_PASSWORD)"
    return [
        "",
        *([demo] if demo else []),
        f"Rackhand is ready: {url}/  (the dashboard; API docs: {url}/api/v1/docs)",
        f"  log in as {login}",
        "",
    ]


class Server(uvicorn.Server):
    """uvicorn's server, printing `lines` once it listens (nothing if it fails to start)."""

    def __init__(self, config: uvicorn.Config, lines: list[str]) -> None:
        super().__init__(config)
        self.lines = lines

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            typer.echo("\n".join(self.lines))
