"""What the CLI prints: tables for people on stdout, errors on stderr with exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.console import Console
from rich.table import Table

from app.cli.client import ApiError, Client, authenticated

SHOWN_ERRORS = 20


def _console(stream: TextIO) -> Console:
    """Lines as long as they need when not on a terminal (rich would cut them at 80 columns),
    unless COLUMNS says otherwise."""
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stream is sys.stderr, width=1_000_000 if piped else None)


out = _console(sys.stdout)
err = _console(sys.stderr)


def fail(exc: ApiError) -> typer.Exit:
    """Print the refusal; the exit code scripts get for it."""
    if exc.errors:  # an import's rows to fix; its detail repeats the first: list each once
        head = f"nothing was imported; {len(exc.errors)} problem(s) to fix"
    else:
        head = exc.detail
    err.print(f"[red]error[/red] ({exc.kind}): {head}", markup=True, highlight=False)
    for row in exc.errors[:SHOWN_ERRORS]:
        err.print(
            f"  row {row.get('row')}, {row.get('field')}: {row.get('message')}", highlight=False
        )
    if len(exc.errors) > SHOWN_ERRORS:
        err.print(f"  and {len(exc.errors) - SHOWN_ERRORS} more", highlight=False)
    return typer.Exit(exc.exit_code)


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


def download(
    path: str,
    params: dict[str, Any],
    output: Path | None,
    references: Iterable[str | None] = (),
) -> None:
    """Fetch an export into a file, or to stdout; streamed, so large exports stay small."""
    try:
        with (
            Client(authenticated(), timeout=3600) as client,
            client.stream(path, params, references) as body,
        ):
            sink = output.open("wb") if output is not None else sys.stdout.buffer
            try:
                for chunk in body:
                    sink.write(chunk)
            finally:
                if output is not None:
                    sink.close()
    except ApiError as exc:
        raise fail(exc) from exc
