"""Entry point of the `rackhand` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli import agents, audit, console, devices, guests, health, login, power, tokens

app = typer.Typer(
    help="Rackhand: remote hands for data-center fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(devices.app, name="devices")
app.add_typer(tokens.app, name="tokens")
app.add_typer(audit.app, name="audit")
app.add_typer(agents.app, name="agents")
app.add_typer(guests.app, name="guests")
app.command("agent")(agents.agent)
app.command("login")(login.login)
app.command("passwd")(login.passwd)
app.command("power")(power.power)
app.command("boot")(power.boot)
app.command("console")(console.console)
app.command("health")(health.health)
app.command("sensors")(health.sensors)
app.command("sel")(health.sel)
app.command("fru")(health.fru)


@app.callback()
def connect(
    url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="the central [RACKHAND_URL, url in config.toml]"),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            metavar="PEM",
            help="CA that signed the central's certificate [RACKHAND_CA_CERT, ca_cert in "
            "config.toml; SSL_CERT_FILE works too]",
        ),
    ] = None,
) -> None:
    """Where the central is and how to trust it: the options stand for their variables."""
    if url:
        os.environ["RACKHAND_URL"] = url
    if ca_cert:
        os.environ["RACKHAND_CA_CERT"] = str(ca_cert)


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
    verbose: Annotated[
        bool, typer.Option(help="with --demo: print the simulated devices' credentials")
    ] = False,
) -> None:
    """Run the central: migrate the database to head, then listen."""
    # Everything this process writes is the service's own (database, key, recordings, the demo
    # simulator's host keys); nothing is for other users, so nothing is readable by them.
    os.umask(0o077)
    from agents import collector

    collector.ignore_asyncssh_dsa_warnings()  # before anything below imports asyncssh
    import uvicorn

    from app.centrals.folder import DataFolderLock
    from app.cli import demo_libvirt, serving
    from app.cli.demo import demo_fleet
    from app.config import Settings
    from app.datafiles import private_folder
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
    collector.quiet_asyncssh()
    private_folder(settings.data_dir)
    serving.check_tls_key(settings.tls_key)
    folder_lock = DataFolderLock(settings.data_dir)  # held until the process ends
    try:
        folder_lock.acquire()  # before the database is migrated: one central per data folder
        vault = load_vault(settings)  # a missing or bad key stops us before the database is touched
        upgrade(settings.database_url, vault=vault)
        local = demo_libvirt.prepare(settings.data_dir) if demo else None
        password = asyncio.run(serving.prepare(settings, demo, local.host if local else None))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    scheme = "https" if settings.tls_cert else "http"
    url = f"{scheme}://{settings.host}:{settings.port}"
    config = uvicorn.Config(
        create_app(settings, folder_lock=folder_lock),
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        log_level="info",
        proxy_headers=False,
        loop="uvloop",  # the agent's IPMI workers run on it too
        timeout_graceful_shutdown=10,  # a stream that does not end never holds the stop up
    )
    collector.tune()
    with (
        demo_fleet(settings.data_dir, verbose) if demo else contextlib.nullcontext() as summary,
        demo_libvirt.running(local) as also,
    ):
        said = "\n".join(line for line in (also, summary) if line) or None
        server = serving.Server(config, serving.last_word(url, password, said))
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down by now
            server.run()
    if not server.started:
        raise typer.Exit(3)  # as uvicorn.run: the server failed to start


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def sim(ctx: typer.Context) -> None:
    """Run simulated BMCs on 127.0.0.1 (`rackhand sim --help` for the options)."""
    from sim.__main__ import main as sim_main

    raise typer.Exit(sim_main(ctx.args))


@app.command()
def keygen() -> None:
    """Print a new service key for RACKHAND_SECRET_KEY."""
    from app.vault import generate_key

    typer.echo(generate_key())


def main() -> None:
    app()
