"""Entry point of the `rackhand` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli import audit, console, devices, power, tokens

app = typer.Typer(
    help="Rackhand: remote hands for data-center fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(devices.app, name="devices")
app.add_typer(tokens.app, name="tokens")
app.add_typer(audit.app, name="audit")
app.command("power")(power.power)
app.command("boot")(power.boot)
app.command("console")(console.console)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [RACKHAND_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [RACKHAND_PORT]")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="SQLite file, key [RACKHAND_DATA_DIR]")
    ] = None,
    database_url: Annotated[str | None, typer.Option(help="[RACKHAND_DATABASE_URL]")] = None,
    tls_cert: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    tls_key: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    demo: Annotated[bool, typer.Option(help="load the demo fleet into an empty catalogue")] = False,
) -> None:
    """Run the central: migrate the database to head, then listen."""
    import uvicorn

    from agents import collector
    from app.config import Settings
    from app.errors import ConfigError
    from app.main import create_app
    from app.migrate import upgrade
    from app.vault import load_vault

    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "database_url": database_url,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
    }
    settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        load_vault(settings)  # a missing or bad key stops us before the database is touched
        upgrade(settings.database_url)
        if demo:
            asyncio.run(_seed_demo(settings))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    scheme = "https" if settings.tls_cert else "http"
    typer.echo(f"Rackhand API docs: {scheme}://{settings.host}:{settings.port}/api/v1/docs")
    application = create_app(settings)
    collector.tune()
    with _demo_fleet(settings.data_dir) if demo else contextlib.nullcontext():
        uvicorn.run(
            application,
            host=settings.host,
            port=settings.port,
            ssl_certfile=settings.tls_cert,
            ssl_keyfile=settings.tls_key,
            log_level="info",
            proxy_headers=False,
            loop="uvloop",  # the agent's IPMI workers run on it too
        )


@contextlib.contextmanager
def _demo_fleet(data_dir: Path) -> Iterator[None]:
    """The demo's BMCs, console servers and PDUs, simulated on 127.0.0.1 while the server runs.

    Their SSH host keys are kept in the data folder: pinned on first contact, they must not
    change at the next `make run`.
    """
    from app.inventory.demo import demo_fleet_args

    keys = ["--host-key-dir", str(data_dir / "sim-host-keys")]
    fleet = subprocess.Popen([sys.executable, "-m", "sim", *demo_fleet_args(), *keys])
    try:
        yield
    finally:
        fleet.terminate()
        fleet.wait(timeout=10)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def sim(ctx: typer.Context) -> None:
    """Run simulated BMCs on 127.0.0.1 (`rackhand sim --help` for the options)."""
    from sim.__main__ import main as sim_main

    raise typer.Exit(sim_main(ctx.args))


async def _seed_demo(settings: object) -> None:
    from app.config import Settings
    from app.db import make_engine, make_sessionmaker
    from app.inventory.demo import seed_demo
    from app.uow import unit_of_work
    from app.vault import load_vault

    assert isinstance(settings, Settings)
    engine = make_engine(settings.database_url)
    try:
        async with unit_of_work(make_sessionmaker(engine, write=True)) as session:
            if await seed_demo(session, load_vault(settings)):
                logging.getLogger("rackhand").info("loaded the demo catalogue")
    finally:
        await engine.dispose()


@app.command()
def keygen() -> None:
    """Print a new service key for RACKHAND_SECRET_KEY."""
    from app.vault import generate_key

    typer.echo(generate_key())


def main() -> None:
    app()
