"""A small HTTP client of the Rackhand API for the CLI: URL and token from env or config."""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer

CONFIG_FILE = Path("~/.config/rackhand/config.toml").expanduser()
DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """The API refused the call; `detail` is its message for the user."""

    def __init__(self, status: int, kind: str, detail: str, errors: list[Any] | None = None):
        super().__init__(f"{kind}: {detail}")
        self.status = status
        self.kind = kind
        self.detail = detail
        self.errors = errors or []


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None


def connection() -> Connection:
    """RACKHAND_URL / RACKHAND_TOKEN, else ~/.config/rackhand/config.toml (`url`, `token`)."""
    config: dict[str, Any] = {}
    if CONFIG_FILE.exists():
        config = tomllib.loads(CONFIG_FILE.read_text())
    url = os.environ.get("RACKHAND_URL") or config.get("url") or DEFAULT_URL
    token = os.environ.get("RACKHAND_TOKEN") or config.get("token")
    return Connection(url=str(url).rstrip("/"), token=token)


class Client:
    def __init__(self, conn: Connection, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {conn.token}"} if conn.token else {}
        self._http = httpx.Client(base_url=f"{conn.url}/api/v1", headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, "Unreachable", f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            self._raise(response)
        return response

    @staticmethod
    def _raise(response: httpx.Response) -> NoReturn:
        try:
            body = response.json()
        except ValueError:
            body = {"error": "HTTPError", "detail": response.text[:500]}
        raise ApiError(
            response.status_code,
            str(body.get("error", "HTTPError")),
            str(body.get("detail", "")),
            body.get("errors"),
        )

    @contextmanager
    def stream(self, path: str, params: dict[str, Any]) -> Iterator[Iterator[bytes]]:
        """GET a streamed body; API errors raise before the first byte is handed out."""
        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise(response)
                yield response.iter_bytes()
        except httpx.TransportError as exc:
            raise ApiError(0, "Unreachable", f"cannot reach {self._http.base_url}: {exc}") from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()


def authenticated() -> Connection:
    """The configured token, or a one-hour token from a username and password."""
    conn = connection()
    if conn.token:
        return conn
    interactive = sys.stdin.isatty()
    if not interactive and not os.environ.get("RACKHAND_PASSWORD"):
        raise ApiError(401, "Unauthenticated", "set RACKHAND_TOKEN (see `rackhand tokens create`)")
    username = os.environ.get("RACKHAND_USERNAME") or typer.prompt("username")
    password = os.environ.get("RACKHAND_PASSWORD") or typer.prompt("password", hide_input=True)
    with Client(conn) as client:
        answer = client.request(
            "POST", "/auth/token", data={"username": username, "password": password}
        ).json()
    return Connection(url=conn.url, token=answer["access_token"])
