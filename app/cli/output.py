"""What the CLI prints: tables for people on stdout, errors on stderr with exit codes."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from app.cli.client import ApiError

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
