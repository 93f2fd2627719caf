"""`rackhand audit list|verify|export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.client import ApiError, Client, authenticated
from app.cli.output import download, err, fail, out, print_json, table

app = typer.Typer(help="Read, verify and export the audit log.", no_args_is_help=True)

Opt = Annotated[str | None, typer.Option()]


def _filters(**values: str | None) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value}


@app.command("list")
def list_events(
    actor: Opt = None,
    device: Opt = None,
    site: Opt = None,
    ticket: Opt = None,
    type: Annotated[str | None, typer.Option(help="e.g. device.updated or auth.*")] = None,
    since: Opt = None,
    until: Opt = None,
    limit: Annotated[int, typer.Option()] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The newest events first."""
    params = _filters(
        actor=actor, device=device, site=site, ticket=ticket, type=type, since=since, until=until
    ) | {"limit": limit}
    try:
        with Client(authenticated()) as client:
            events = client.get("/audit", **params)["items"]
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(events)
        return
    listing = table("SEQ", "AT", "TYPE", "OUTCOME", "ACTOR", "TARGET", "SITE", "TICKET")
    for event in events:
        listing.add_row(
            str(event["seq"]),
            event["at"][:19],
            event["type"],
            event["outcome"],
            event["actor_name"],
            event["target_name"] or "",
            event["site"] or "",
            event["ticket"] or "",
        )
    out.print(listing)


@app.command()
def verify() -> None:
    """Walk the hash chain; exit 1 and name the first bad event if it does not hold."""
    try:
        with Client(authenticated(), timeout=3600) as client:
            result = client.get("/audit/verify")
    except ApiError as exc:
        raise fail(exc) from exc
    if result["ok"]:
        out.print(f"audit chain intact: {result['checked']} events checked")
        return
    bad = result["first_bad"]
    err.print(
        f"audit chain BROKEN at event #{bad['seq']} (id {bad['id']}): {bad['reason']}; "
        f"{result['checked']} events before it are intact",
        highlight=False,
    )
    raise typer.Exit(1)


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
    since: Opt = None,
    until: Opt = None,
    site: Opt = None,
) -> None:
    """Export events, oldest first, with their hashes."""
    params = _filters(since=since, until=until, site=site) | {"format": fmt}
    download("/audit/export", params, output)
