"""What the CLI prints: tables for people on stdout, errors on stderr with exit codes."""

from __future__ import annotations

import typer
from rich.console import Console

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
