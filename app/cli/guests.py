"""`rackhand guests sync|list`: a hypervisor's guests, as its host lists them."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from app.cli.client import ApiError, Client, authenticated
from app.cli.output import fail, out, print_json

app = typer.Typer(
    help="Hypervisor guests: sync a host's domains into the catalogue, list them.",
    no_args_is_help=True,
)
Host = Annotated[str, typer.Argument(help="the hypervisor device's name")]
AsJson = Annotated[bool, typer.Option("--json")]


@app.command()
def sync(
    host: Host,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would change")] = False,
    ticket: Annotated[str | None, typer.Option(help="ticket reference, kept in the audit")] = None,
    as_json: AsJson = False,
) -> None:
    """Create, update or mark gone the host's vm devices, as the host lists its domains."""
    headers = {"X-Ticket": ticket} if ticket else {}
    try:
        with Client(authenticated()) as client:
            result = client.request(
                "POST", f"/devices/{quote(host, safe='')}/sync", references=[host],
                params={"dry_run": str(dry_run).lower()}, headers=headers,
            ).json()  # fmt: skip
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(result)
        return
    for guest in result["guests"]:
        if guest["action"] != "unchanged":
            out.print(f"{guest['action']:>9} {guest['device']} {_changes(guest)}", highlight=False)
    would = "would be " if result["dry_run"] else ""
    out.print(
        f"{host}: {result['listed']} domains; {would}created {result['created']}, updated "
        f"{result['updated']}, gone {result['gone']}; unchanged {result['unchanged']}"
        + (f", skipped {result['skipped']}" if result["skipped"] else ""),
        highlight=False,
    )


@app.command("list")
def list_guests(host: Host, as_json: AsJson = False) -> None:
    """The host's guests as its last sync found them (gone ones last)."""
    try:
        with Client(authenticated()) as client:
            guests = client.get(f"/devices/{quote(host, safe='')}/guests", references=[host])
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(guests)
        return
    for guest in guests:
        gone = f" gone since {guest['gone_at']}" if guest["gone_at"] else ""
        out.print(
            f"{guest['device']} {guest['state']} {guest['vcpus']} vCPU {guest['memory_mib']} MiB"
            f"{' autostart' if guest['autostart'] else ''} {guest['uuid']}{gone}",
            highlight=False,
        )


def _changes(guest: dict[str, Any]) -> str:
    if guest["action"] in ("skipped", "gone"):
        return str(guest["message"])
    return ", ".join(f"{field} {before}→{after}" for field, (before, after) in
                     guest["changes"].items() if before is not None or field == "host")  # fmt: skip
