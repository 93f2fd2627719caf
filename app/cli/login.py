"""`rackhand login` (a one-hour token for a username and password, kept in config.toml) and
`rackhand passwd` (a new password, typed by the person it belongs to)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from app.cli import config
from app.cli.client import ApiError, Client, Connection, connection, local_time, log_in
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
    where = _store(conn, token, expires_at)
    out.print(
        f"Logged in to {redact_urls(conn.url)} as {username}; the token is stored in {where} "
        f"until {local_time(expires_at)}.",
        highlight=False,
    )


def passwd(
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="[RACKHAND_USERNAME]; asked if absent")
    ] = None,
) -> None:
    """Change your own password: the current one (asked, or RACKHAND_PASSWORD), then the new
    one (asked twice, or RACKHAND_NEW_PASSWORD).

    Your other dashboard sessions and one-hour logins end; named API tokens keep working. The
    login made here is kept in config.toml like `rackhand login`'s.
    """
    conn = connection()
    username = username or os.environ.get("RACKHAND_USERNAME") or _ask("username", "--username")
    current = os.environ.get("RACKHAND_PASSWORD") or _ask("password", "RACKHAND_PASSWORD")
    new = os.environ.get("RACKHAND_NEW_PASSWORD") or _ask_new()
    try:
        # A password change needs an interactive login: this one, made with the password.
        token, expires_at = log_in(conn, username, current)
        with Client(replace(conn, token=token, stored=False)) as client:
            client.request(
                "PATCH",
                f"/users/{username}",
                json={"password": new, "current_password": current},
            )
    except ApiError as exc:
        raise fail(exc) from exc
    where = _store(conn, token, expires_at)
    out.print(
        f"Changed the password of {username}; its other sessions and one-hour logins have "
        f"ended (named API tokens keep working: `rackhand tokens list`). Logged in until "
        f"{local_time(expires_at)}, token in {where}.",
        highlight=False,
    )


def _store(conn: Connection, token: str, expires_at: datetime) -> Path:
    """Keep a login's token in config.toml (exit 1 if it cannot be written)."""
    values: dict[str, str | datetime] = {
        "url": conn.url,
        "token": token,
        "token_expires_at": expires_at,
    }
    if conn.ca_cert is not None:
        values["ca_cert"] = str(conn.ca_cert.absolute())
    try:
        return config.store(values)
    except (OSError, ValueError) as exc:
        err.print(f"[red]error[/red]: the token could not be stored: {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _ask_new() -> str:
    """The new password, typed twice so a slip of the finger does not lock its owner out."""
    if not sys.stdin.isatty():
        err.print("error: no terminal to ask the new password on; give RACKHAND_NEW_PASSWORD")
        raise typer.Exit(2)
    return str(typer.prompt("new password", hide_input=True, confirmation_prompt=True))


def _ask(what: str, instead: str) -> str:
    """A prompt (the password's hidden), or exit 2 when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        err.print(f"error: no terminal to ask the {what} on; give {instead}", highlight=False)
        raise typer.Exit(2)
    return str(typer.prompt(what, hide_input=what == "password"))
