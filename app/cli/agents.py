"""`rackhand agents enrol|list|revoke` (on the central's API) and `rackhand agent` (at a site)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.cli.client import ApiError, Client, authenticated
from app.cli.output import fail, out, print_json

app = typer.Typer(
    help="Site agents: enrol one for a branch, list them with their link's state, revoke.",
    no_args_is_help=True,
)


@app.command()
def enrol(
    site: Annotated[str, typer.Argument(help="the site's slug")],
    name: Annotated[str, typer.Argument(help="the agent's name, unique in the site")],
    hours: Annotated[float, typer.Option(help="hours the join token stays usable")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Enrol an agent and print the command to run at the site (the join token is shown once)."""
    body = {"site": site, "name": name, "expires_in": round(hours * 3600)}
    try:
        with Client(authenticated()) as client:
            created = client.request("POST", "/agents", json=body).json()
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(created)
        return
    sys.stderr.write(
        f"Agent {site}/{name} enrolled; its join token works once, until {created['expires_at']}.\n"
        "Run this at the site (from then on the site is served only by its agents):\n"
    )
    out.print(created["command"], highlight=False, soft_wrap=True)


@app.command("list")
def list_agents(
    site: Annotated[str | None, typer.Option(help="one site's agents")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Agents of the sites you see: status, version, address, since when, work in flight."""
    try:
        with Client(authenticated()) as client:
            agents = client.get("/agents", **({"site": site} if site else {}))
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(agents)
        return
    for agent in agents:
        since = {
            "online": f"since {agent['connected_since']}",
            "offline": f"last seen {agent['last_seen'] or 'never'}",
            "pending": f"join token until {agent['join_expires_at']}",
            "revoked": f"at {agent['revoked_at']}",
        }[agent["status"]]
        work = f" tasks {agent['tasks']} consoles {agent['consoles']}"
        out.print(
            f"{agent['id']:>4} {agent['site']}/{agent['name']} {agent['status']} {since}"
            f" {agent['version'] or ''} {agent['address'] or ''}"
            f"{work if agent['status'] == 'online' else ''}",
            highlight=False,
        )


@app.command()
def revoke(agent_id: int) -> None:
    """Revoke an agent: its link closes within seconds and its credential never works again."""
    try:
        with Client(authenticated()) as client:
            client.request("DELETE", f"/agents/{agent_id}")
    except ApiError as exc:
        raise fail(exc) from exc


def agent(
    central: Annotated[
        str | None,
        typer.Option(envvar="RACKHAND_CENTRAL", help="the central's https:// address"),
    ] = None,
    join_token: Annotated[
        str | None,
        typer.Option(envvar="RACKHAND_JOIN_TOKEN", help="first start only: rhj_… from enrol"),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(envvar="RACKHAND_AGENT_DATA_DIR", help="the agent's credential")
    ] = Path("rackhand-agent"),
    ca_cert: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="trust only this CA for the central"),
    ] = None,
) -> None:
    """Run a site agent: it dials out to the central and reaches the site's devices."""
    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import uvloop

    from agents import collector

    collector.ignore_asyncssh_dsa_warnings()
    collector.quiet_asyncssh()
    from agents.link import BadCentral, Refused, start

    async def run() -> None:
        site_agent = await start(central, join_token, data_dir, ca_cert)
        await site_agent.run()

    collector.tune()  # as `rackhand serve`, whose built-in agent this process stands for
    try:
        uvloop.run(run())  # the central's loop, and its workers'; the link's messages are many
    except (BadCentral, Refused) as exc:
        typer.echo(f"rackhand agent: {exc}", err=True)
        raise typer.Exit(2 if isinstance(exc, BadCentral) else 1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
