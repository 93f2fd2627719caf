"""What the CLI prints: tables for people on stdout, errors on stderr with exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from app.cli.client import ApiError, Client, authenticated

out = Console()
err = Console(stderr=True)


def fail(exc: ApiError) -> typer.Exit:
    err.print(f"[red]error[/red] ({exc.kind}): {exc.detail}", markup=True, highlight=False)
    for row in exc.errors[:20]:
        err.print(
            f"  row {row.get('row')}, {row.get('field')}: {row.get('message')}", highlight=False
        )
    return typer.Exit(2 if exc.status in (400, 422) else 1)


def print_json(value: object) -> None:
    """`--json` output: indented, one document, newline-terminated."""
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def table(*columns: str) -> Table:
    """A borderless table with bold headers, as every listing prints."""
    grid = Table(box=None, header_style="bold")
    for column in columns:
        grid.add_column(column)
    return grid


def download(path: str, params: dict[str, Any], output: Path | None) -> None:
    """Fetch an export into a file, or to stdout; streamed, so large exports stay small."""
    try:
        with Client(authenticated(), timeout=3600) as client, client.stream(path, params) as body:
            sink = output.open("wb") if output is not None else sys.stdout.buffer
            try:
                for chunk in body:
                    sink.write(chunk)
            finally:
                if output is not None:
                    sink.close()
    except ApiError as exc:
        raise fail(exc) from exc
