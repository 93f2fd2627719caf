"""`rackhand tokens create|list|revoke`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from app.cli.client import ApiError, Client, authenticated
from app.cli.output import fail, out, print_json

app = typer.Typer(help="API tokens for scripts (shown once, stored hashed).", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="what the token is for, e.g. branch-12-power")],
    role: Annotated[str, typer.Option(help="viewer, operator or admin")] = "operator",
    site: Annotated[list[str] | None, typer.Option(help="repeat for several; omit for all")] = None,
    days: Annotated[int, typer.Option(help="days until it expires (1 to 365)")] = 365,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a token and print it once."""
    body = {"name": name, "role": role, "sites": site or None, "expires_in_days": days}
    try:
        with Client(authenticated()) as client:
            created = client.request("POST", "/tokens", json=body).json()
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(created)
        return
    sys.stderr.write("This is the only time the token is shown; store it now.\n")
    out.print(created["token"], highlight=False)


@app.command("list")
def list_tokens(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Your tokens (every token, for an admin of all sites)."""
    try:
        with Client(authenticated()) as client:
            tokens = client.get("/tokens")
    except ApiError as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(tokens)
        return
    for token in tokens:
        grants = "; ".join(f"{g['role']}@{','.join(g['sites'] or ['*'])}" for g in token["grants"])
        state = "revoked" if token["revoked_at"] else f"expires {token['expires_at'] or 'never'}"
        out.print(f"{token['id']:>5} {token['prefix']}… {token['name']} [{grants}] {state}")


@app.command()
def revoke(token_id: int) -> None:
    """Revoke a token at once."""
    try:
        with Client(authenticated()) as client:
            client.request("DELETE", f"/tokens/{token_id}")
    except ApiError as exc:
        raise fail(exc) from exc
