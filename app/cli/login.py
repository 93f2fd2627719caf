"""`rackhand login`: a one-hour token for a username and password, kept in config.toml."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import Annotated

import typer

from app.cli import config
from app.cli.client import ApiError, connection, local_time, log_in
from app.cli.output import err, fail, out
from app.urls import redact_urls


def login(
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="[RACKHAND_USERNAME]; asked if absent")
    ] = None,
) -> None:
    """Log in with a password (asked, or RACKHAND_PASSWORD); the token is kept for an hour.

    The token, its expiry, the URL and the CA it belongs to go into
    ~/.config/rackhand/config.toml (private to you); its other keys are kept.
    """
    conn = connection()
    username = username or os.environ.get("RACKHAND_USERNAME") or _ask("username", "--username")
    password = os.environ.get("RACKHAND_PASSWORD") or _ask("password", "RACKHAND_PASSWORD")
    try:
        token, expires_at = log_in(conn, username, password)
    except ApiError as exc:
        raise fail(exc) from exc
    values: dict[str, str | datetime] = {
        "url": conn.url,
        "token": token,
        "token_expires_at": expires_at,
    }
    if conn.ca_cert is not None:
        values["ca_cert"] = str(conn.ca_cert.absolute())
    try:
        where = config.store(values)
    except (OSError, ValueError) as exc:
        err.print(f"[red]error[/red]: the token could not be stored: {exc}", highlight=False)
        raise typer.Exit(1) from exc
    out.print(
        f"Logged in to {redact_urls(conn.url)} as {username}; the token is stored in {where} "
        f"until {local_time(expires_at)}.",
        highlight=False,
    )


def _ask(what: str, instead: str) -> str:
    """A prompt (the password's hidden), or exit 2 when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        err.print(f"error: no terminal to ask the {what} on; give {instead}", highlight=False)
        raise typer.Exit(2)
    return str(typer.prompt(what, hide_input=what == "password"))
