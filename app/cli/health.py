"""`rackhand health [SELECTOR]`, `rackhand sensors DEVICE`, `rackhand sel DEVICE [--clear]`
and `rackhand fru DEVICE [--apply]`: what the BMCs say of the hardware.

`health` exits 1 when any device is critical (a script's alarm), 0 otherwise; every command
exits 1 on a refusal and 2 on usage errors, as `power` does.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from app.cli.client import ApiError, Client, authenticated
from app.cli.devices import Kind, Rack, Tags
from app.cli.output import err, fail, out, print_json, table

Device = Annotated[str, typer.Argument(help="the device's name")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
Ticket = Annotated[str | None, typer.Option(help="ticket reference, kept in the audit")]
_STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red", "unknown": "dim"}


def health(
    select: Annotated[
        str | None,
        typer.Argument(help="node range, e.g. 'web[01-40],db1'; optional with a filter"),
    ] = None,
    site: Annotated[str | None, typer.Option(help="only devices of this site")] = None,
    rack: Rack = None,
    kind: Kind = None,
    tag: Tags = None,
    cached: Annotated[
        bool, typer.Option("--cached", help="the stored verdicts; do not ask the BMCs now")
    ] = False,
    as_json: Json = False,
) -> None:
    """Each device's verdict from its sensors (ok, warning, critical, unknown) and why."""
    params: dict[str, Any] = {"cached": str(cached).lower()}
    optional = {"select": select, "site": site, "rack": rack, "kind": kind, "tag": tag}
    params |= {key: value for key, value in optional.items() if value}
    try:
        with Client(authenticated(), timeout=300.0) as client:
            found = client.request("GET", "/health", params=params, references=(site, rack)).json()
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(found)
    else:
        grid = table("DEVICE", "HEALTH", "WHY")
        for one in found["devices"]:
            why = "; ".join(one["reasons"]) or one["message"]
            style = _STYLE[one["health"]]
            grid.add_row(one["device"], f"[{style}]{one['health']}[/{style}]", why)
        out.print(grid)
        counts = ", ".join(f"{n} {health}" for health, n in found["counts"].items() if n)
        err.print(f"{len(found['devices'])} devices: {counts or 'none'}", highlight=False)
    raise typer.Exit(1 if found["counts"].get("critical") else 0)


def sensors(device: Device, as_json: Json = False) -> None:
    """Every sensor of the device's BMC, read now: reading, state and thresholds."""
    read = _call("GET", device, "sensors")
    if as_json:
        print_json(read)
        return
    grid = table("SENSOR", "TYPE", "READING", "STATE", "THRESHOLDS")
    for sensor in read["sensors"]:
        value = "" if sensor["reading"] is None else f"{sensor['reading']:g} {sensor['unit']}"
        state = sensor["state"]
        style = _STYLE.get(state, "dim")
        shown = f"[{style}]{state}[/{style}]" + (
            f" ({', '.join(sensor['states'])})" if sensor["states"] else ""
        )
        grid.add_row(sensor["name"], sensor["type"], value, shown, _limits(sensor["thresholds"]))
    out.print(grid)
    err.print(f"{device}: {read['health']} via {read['path']}", highlight=False)


def sel(
    device: Device,
    clear: Annotated[
        bool, typer.Option("--clear", help="clear the log after reading it (operator)")
    ] = False,
    ticket: Ticket = None,
    as_json: Json = False,
) -> None:
    """The BMC's system event log, newest first; `--clear` empties it, losing nothing unseen."""
    if clear:
        read = _call("POST", device, "events/clear", json={"ticket": ticket} if ticket else None)
    else:
        read = _call("GET", device, "events")
    if as_json:
        print_json(read)
        return
    grid = table("ID", "TIME", "SEVERITY", "SENSOR", "EVENT")
    for event in read["events"]:
        what = event["message"]
        if not event["asserted"] and "deassert" not in what.lower():
            what += " (deasserted)"
        style = _STYLE.get(event["severity"], "dim")
        grid.add_row(
            event["id"],
            event["time"] or "-",
            f"[{style}]{event['severity']}[/{style}]",
            event["sensor"],
            what,
        )
    out.print(grid)
    said = "cleared; it held" if read["cleared"] else "holds"
    err.print(f"{device}: the event log {said} {len(read['events'])} entries", highlight=False)


def fru(
    device: Device,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="copy vendor, model and serial into the catalogue (admin)"),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="with --apply: only show")] = False,
    as_json: Json = False,
) -> None:
    """FRU inventory (board, product, chassis) and how it differs from the catalogue."""
    if apply:
        read = _call("POST", device, "inventory/apply", params={"dry_run": str(dry_run).lower()})
    else:
        read = _call("GET", device, "inventory")
    if as_json:
        print_json(read)
        return
    for unit in read.get("frus", []):
        out.print(f"FRU {unit['id']} {unit['name']}", highlight=False)
        for area in ("product", "board", "chassis"):
            if unit[area]:
                fields = {k: v for k, v in unit[area].items() if v}
                shown = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in fields.items())
                out.print(f"  {area}: {shown}", highlight=False)
    verb = "would change" if read.get("dry_run") else "changed" if apply else "differs"
    for change in read["changes"]:
        out.print(
            f"{verb}: {change['field']} {change['catalogue']!r} → {change['fru']!r}",
            highlight=False,
        )
    if not read["changes"]:
        err.print(f"{device}: the catalogue agrees with the FRU data", highlight=False)


def _call(method: str, device: str, what: str, **kwargs: Any) -> Any:
    """One call about the device's BMC (it may take a while to answer), its JSON answer."""
    url = f"/devices/{quote(device, safe='')}/{what}"
    try:
        with Client(authenticated(), timeout=120.0) as client:
            return client.request(method, url, references=[device], **kwargs).json()
    except ApiError as exc:
        raise fail(exc) from exc


def _limits(thresholds: dict[str, float | None] | None) -> str:
    if not thresholds:
        return ""
    return " ".join(f"{_SHORT[k]} {v:g}" for k, v in thresholds.items() if v is not None)


# ipmitool's and FreeIPMI's short names of thresholds
_SHORT = {
    "lower_non_recoverable": "lnr",
    "lower_critical": "lcr",
    "lower_non_critical": "lnc",
    "upper_non_critical": "unc",
    "upper_critical": "ucr",
    "upper_non_recoverable": "unr",
}
