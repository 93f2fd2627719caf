"""`rackhand power ACTION [SELECTOR] [filters]` and `rackhand boot DEVICE_TYPE DEVICE`.

Exit codes scripts can trust: 0 when every target that could act succeeded (devices a filter
picked that have no power path are `skipped`), 1 when any did not (or the call was refused),
2 on usage errors. Progress goes to stderr, so `--json` on stdout stays clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated, Any

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agents.protocol import BootDevice as BootTarget
from agents.protocol import PowerAction as Action
from agents.protocol import TaskStatus
from app.cli.client import ApiError, Client, authenticated
from app.cli.devices import Kind, Rack, Tags
from app.cli.output import err, fail, out, print_json, table

CONFIRM = frozenset({Action.OFF, Action.SOFT, Action.CYCLE, Action.RESET, Action.NMI})
_PENDING = (TaskStatus.QUEUED, TaskStatus.RUNNING)


Ticket = Annotated[str | None, typer.Option(help="ticket reference, kept in the audit")]
Reason = Annotated[str | None, typer.Option(help="why, kept in the audit")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
Timeout = Annotated[float, typer.Option(help="seconds per device before it counts as timed out")]


def power(
    action: Annotated[Action, typer.Argument(help="status, on, off, soft, cycle, reset, nmi")],
    select: Annotated[
        str | None,
        typer.Argument(help="node range, e.g. 'web[01-40],db1'; optional with a filter"),
    ] = None,
    site: Annotated[str | None, typer.Option(help="only devices of this site")] = None,
    rack: Rack = None,
    kind: Kind = None,
    tag: Tags = None,
    ticket: Ticket = None,
    reason: Reason = None,
    stagger: Annotated[
        int | None, typer.Option(help="at most N power-ons per second per site")
    ] = None,
    max_targets: Annotated[
        int | None, typer.Option(help="refuse if the selector matches more devices")
    ] = None,
    timeout: Timeout = 30.0,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before acting")] = False,
    as_json: Json = False,
) -> None:
    """Power every device the node range and filters match, as one job, and show each result."""
    body: dict[str, Any] = {"action": action.value, "timeout": timeout}
    optional = {"select": select, "site": site, "rack": rack, "kind": kind, "tags": tag,
                "ticket": ticket, "reason": reason, "stagger": stagger,
                "max_targets": max_targets}  # fmt: skip
    body |= {key: value for key, value in optional.items() if value}
    try:
        with Client(authenticated(), timeout=max(60.0, timeout + 30)) as client:
            if action in CONFIRM and not yes:
                _confirm(client, body)
            job = client.request("POST", "/power", json=body, references=(site, rack)).json()
            _follow(client, job, quiet=as_json)
            job = client.get(f"/jobs/{job['id']}")
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(job)
    else:
        _show(job["tasks"])
        counts = ", ".join(f"{count} {status}" for status, count in sorted(job["counts"].items()))
        err.print(f"job {job['id']}: {job['status']} ({counts})", highlight=False)
    raise typer.Exit(0 if job["status"] == "succeeded" else 1)


def _confirm(client: Client, body: dict[str, Any]) -> None:
    """Show what a destructive action would hit; ask, or refuse when nobody can answer."""
    named = (body.get("site"), body.get("rack"))
    dry = client.request("POST", "/power", json=body | {"dry_run": True}, references=named).json()
    names = dry["devices"]
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    if not sys.stdin.isatty():
        err.print(
            f"refusing to {body['action']} {len(names)} device(s) without --yes "
            f"(they would be: {shown})",
            highlight=False,
        )
        raise typer.Exit(2)
    if not typer.confirm(f"{body['action']} {len(names)} device(s): {shown}?"):
        raise typer.Exit(1)


def _follow(client: Client, job: dict[str, Any], *, quiet: bool) -> None:
    """A progress bar fed by the job's event stream, until the job ends."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet or not err.is_terminal,
    ) as progress:
        bar = progress.add_task(f"{job['action']}", total=job["total"], failed=0)
        done: dict[str, str] = {}
        with client.stream(f"/jobs/{job['id']}/events", {}) as chunks:
            for event, data in _events(chunks):
                if event == "job" and data.get("tasks") is not None:
                    for task in data["tasks"]:
                        if task["status"] not in _PENDING:
                            done[task["device"]] = task["status"]
                elif event == "task" and data["status"] not in _PENDING:
                    done[data["device"]] = data["status"]
                failed = sum(1 for status in done.values() if status not in _FINE)
                progress.update(bar, completed=len(done), failed=failed)
                if event == "job" and data.get("tasks") is None:
                    return


def _events(chunks: Iterator[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-Sent Events, parsed from the streamed body."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event, data = "message", b""
            for line in block.split(b"\n"):
                if line.startswith(b"event: "):
                    event = line[7:].decode()
                elif line.startswith(b"data: "):
                    data += line[6:]
            yield event, orjson.loads(data) if data else {}


_FINE = (TaskStatus.SUCCEEDED, TaskStatus.SKIPPED)  # a skipped device had no power path
_COLOURS = {TaskStatus.SUCCEEDED: "green", TaskStatus.SKIPPED: "yellow"}


def _show(tasks: list[dict[str, Any]]) -> None:
    listing = table("DEVICE", "RESULT", "POWER", "PATH", "MESSAGE")
    for task in tasks:
        colour = _COLOURS.get(task["status"], "red")
        listing.add_row(
            task["device"],
            f"[{colour}]{task['status']}[/{colour}]",
            task["power_state"] or "",
            task["path"] or "",
            task["message"],
        )
    out.print(listing)


def boot(
    target: Annotated[BootTarget, typer.Argument(help="bios, pxe, disk, cdrom, usb, default")],
    device: Annotated[str, typer.Argument(help="device name")],
    persistent: Annotated[bool, typer.Option(help="every boot, not only the next one")] = False,
    ticket: Ticket = None,
    reason: Reason = None,
    timeout: Timeout = 30.0,
    as_json: Json = False,
) -> None:
    """Set a device's next boot device (`bios` stops in BIOS setup on the next boot)."""
    body: dict[str, Any] = {"device": target.value, "persistent": persistent, "timeout": timeout,
                            "wait": timeout + 5}  # fmt: skip
    body |= {key: value for key, value in {"ticket": ticket, "reason": reason}.items() if value}
    try:
        with Client(authenticated(), timeout=timeout + 30) as client:
            result = client.request(
                "POST", f"/devices/{device}/boot", json=body, references=(device,)
            ).json()
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(result)
    else:
        _show([result])
    raise typer.Exit(0 if result["status"] == TaskStatus.SUCCEEDED else 1)
