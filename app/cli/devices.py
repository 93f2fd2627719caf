"""`rackhand devices list|show|import|export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.client import ApiError, Client, authenticated
from app.cli.output import download, err, fail, out, print_json, table

app = typer.Typer(help="Find, show, import and export devices.", no_args_is_help=True)

Select = Annotated[str | None, typer.Argument(help="node range, e.g. 'web[01-20],db1'")]
Site = Annotated[str | None, typer.Option(help="site slug")]
Rack = Annotated[str | None, typer.Option(help="rack name")]
Kind = Annotated[str | None, typer.Option(help="server, pdu, console_server, vm, ...")]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="repeat to require several")]
Status = Annotated[str | None, typer.Option(help="active, maintenance, decommissioned")]
Query = Annotated[str | None, typer.Option("--q", help="text in name, serial, asset tag, model")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _filters(
    select: str | None,
    site: str | None,
    rack: str | None,
    kind: str | None,
    tag: list[str] | None,
    status: str | None,
    q: str | None,
) -> dict[str, Any]:
    params = {"select": select, "site": site, "rack": rack, "kind": kind, "status": status, "q": q}
    return {key: value for key, value in params.items() if value} | ({"tag": tag} if tag else {})


@app.command("list")
def list_devices(
    select: Select = None,
    site: Site = None,
    rack: Rack = None,
    kind: Kind = None,
    tag: Tags = None,
    status: Status = None,
    q: Query = None,
    as_json: Json = False,
    limit: Annotated[int, typer.Option(help="at most this many; 0 for all")] = 0,
) -> None:
    """List devices matching a node range and filters, in name order."""
    params = _filters(select, site, rack, kind, tag, status, q)
    found: list[dict[str, Any]] = []
    try:
        with Client(authenticated()) as client:
            cursor = None
            while True:
                page_size = min(1000, limit - len(found)) if limit else 1000
                page = client.get(
                    "/devices",
                    references=(site, rack),
                    **params,
                    limit=page_size,
                    **({"cursor": cursor} if cursor else {}),
                )
                found.extend(page["items"])
                cursor = page["next_cursor"]
                if cursor is None or (limit and len(found) >= limit):
                    break
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(found)
        return
    listing = table("NAME", "KIND", "SITE", "RACK", "U", "STATUS", "POWER", "MODEL", "TAGS")
    for device in found:
        listing.add_row(
            device["name"],
            device["kind"],
            device["site"],
            device["rack"] or "",
            str(device["position_u"] or ""),
            device["status"],
            device["power_state"],
            f"{device['vendor']} {device['model']}".strip(),
            ",".join(device["tags"]),
        )
    out.print(listing)
    err.print(f"{len(found)} devices", style="dim")


@app.command()
def show(name: str, as_json: Json = False) -> None:
    """Show one device with its control paths (secrets are never shown)."""
    try:
        with Client(authenticated()) as client:
            device = client.get(f"/devices/{name}", references=(name,))
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(device)
        return
    fields = Table(box=None, show_header=False)
    fields.add_column(style="bold")
    fields.add_column()
    for key, value in device.items():
        if key not in ("paths", "attributes", "tags"):
            fields.add_row(key, "" if value is None else str(value))
    fields.add_row("tags", ", ".join(device["tags"]))
    fields.add_row("attributes", json.dumps(device["attributes"]))
    out.print(fields)
    paths = table("ID", "PRIO", "KIND", "TARGET", "USER", "SECRET")
    paths.title = "control paths"
    for path in device["paths"]:
        target = path["address"] or path["via"] or ""
        if path["port"]:
            target += f" port {path['port']}"
        if path["outlets"]:
            target += " outlets " + ",".join(map(str, path["outlets"]))
        if path["domain"]:
            target += f" domain {path['domain']}"
        paths.add_row(
            str(path["id"]),
            str(path["priority"]),
            path["kind"],
            target,
            path["username"] or "",
            path["secret"] or "",
        )
    out.print(paths)


@app.command("import")
def import_devices(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a .csv or .json file")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only report what would change")
    ] = False,
    as_json: Json = False,
) -> None:
    """Upsert devices by name from CSV or JSON; a file with any bad row changes nothing."""
    content_type = "text/csv" if file.suffix.lower() == ".csv" else "application/json"
    try:
        with Client(authenticated(), timeout=600) as client:
            result = client.request(
                "POST",
                "/devices/import",
                params={"dry_run": dry_run},
                content=file.read_bytes(),
                headers={"Content-Type": content_type},
            ).json()
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(result)
        return
    dry = result["dry_run"]
    for row in result["rows"]:
        if row["action"] != "unchanged":
            done = f"would {row['action']}" if dry else f"{row['action']}d"
            fields = ", ".join(row["changes"]) if row["changes"] else ""
            out.print(f"{done:>12} {row['name']} {fields}", highlight=False)
    created, updated, unchanged = result["created"], result["updated"], result["unchanged"]
    if dry:
        summary = f"would create {created}, update {updated}; {unchanged} unchanged"
        summary += " (dry run, nothing written)"
    else:
        summary = f"{created} created, {updated} updated, {unchanged} unchanged"
        summary += "" if created or updated else " (nothing written)"
    out.print(summary, highlight=False)


@app.command()
def export(
    select: Select = None,
    site: Site = None,
    rack: Rack = None,
    kind: Kind = None,
    tag: Tags = None,
    status: Status = None,
    q: Query = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="file (default: stdout)")
    ] = None,
) -> None:
    """Export devices (JSON includes control paths, without secrets)."""
    params = _filters(select, site, rack, kind, tag, status, q) | {"format": fmt}
    download("/devices/export", params, output, references=(site, rack))
