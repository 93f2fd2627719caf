"""A small HTTP client of the Rackhand API for the CLI: where, how to trust it and who is asking.

Each setting comes from a global option, else the environment, else
~/.config/rackhand/config.toml (`url`, `ca_cert`, and the `token` that `rackhand login` stores).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import typer

from app.cli import config
from app.urls import redact_urls

DEFAULT_URL = "http://127.0.0.1:8000"
FIRST_RUN = (
    "not logged in: run `rackhand login`, or set RACKHAND_USERNAME and RACKHAND_PASSWORD "
    "(scripts may set RACKHAND_TOKEN instead, see `rackhand tokens create`)"
)


class ApiError(Exception):
    """The API refused the call; `detail` is its message for the user."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        errors: list[Any] | None = None,
        *,
        bad_reference: bool = False,
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.status = status
        self.kind = kind
        self.detail = detail
        self.errors = errors or []
        self.bad_reference = bad_reference

    @property
    def exit_code(self) -> int:
        """2 for bad input (a rejected field, or a name given on the command line that is not
        there), 1 for any other refusal and for a server out of reach."""
        return 2 if self.status in (400, 422) or self.bad_reference else 1


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None
    ca_cert: Path | None = None
    stored: bool = False  # the token is the one `rackhand login` wrote to config.toml
    expires_at: datetime | None = None

    def ca_context(self) -> ssl.SSLContext | None:
        """Trust only the named CA; None leaves the defaults (httpx honours SSL_CERT_FILE)."""
        if self.ca_cert is None:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_cert)
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot load the CA certificate {self.ca_cert}: {exc}", param_hint="--ca-cert"
            ) from exc


def connection() -> Connection:
    """The settings, each from a RACKHAND_* variable (or its global option), else config.toml."""
    stored = config.load()
    url = os.environ.get("RACKHAND_URL") or stored.get("url") or DEFAULT_URL
    ca_cert = os.environ.get("RACKHAND_CA_CERT") or stored.get("ca_cert")
    token = os.environ.get("RACKHAND_TOKEN")
    return Connection(
        url=str(url).rstrip("/"),
        token=token or stored.get("token"),
        ca_cert=Path(ca_cert).expanduser() if ca_cert else None,
        stored=not token and "token" in stored,
        expires_at=None if token else stored.get("token_expires_at"),
    )


def log_in(conn: Connection, username: str, password: str) -> tuple[str, datetime]:
    """A one-hour token for a username and password (OAuth2 password flow), and its expiry."""
    now = datetime.now(UTC)
    with Client(replace(conn, token=None, stored=False)) as client:
        answer = client.request(
            "POST", "/auth/token", data={"username": username, "password": password}
        ).json()
    return str(answer["access_token"]), now + timedelta(seconds=int(answer["expires_in"]))


def authenticated() -> Connection:
    """RACKHAND_TOKEN; else a token for RACKHAND_USERNAME and RACKHAND_PASSWORD; else the
    token `rackhand login` stored, while it lasts."""
    conn = connection()
    if conn.token and not conn.stored:
        return conn
    username, password = os.environ.get("RACKHAND_USERNAME"), os.environ.get("RACKHAND_PASSWORD")
    if username and password:
        token, expires_at = log_in(conn, username, password)
        return replace(conn, token=token, stored=False, expires_at=expires_at)
    if conn.token is None:
        raise ApiError(401, "Unauthenticated", FIRST_RUN)
    if conn.expires_at is not None and conn.expires_at <= datetime.now(UTC):
        raise ApiError(
            401,
            "Unauthenticated",
            f"the login to {redact_urls(conn.url)} expired at {local_time(conn.expires_at)}; "
            "run `rackhand login` again",
        )
    return conn


def local_time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")


class Client:
    def __init__(self, conn: Connection, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {conn.token}"} if conn.token else {}
        self._stored = conn.stored
        self._http = httpx.Client(
            base_url=f"{conn.url}/api/v1",
            headers=headers,
            timeout=timeout,
            verify=conn.ca_context() or True,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, references: Iterable[str | None] = (), **kwargs: Any
    ) -> httpx.Response:
        """Call the API; `references` are the names the user typed that the call looks up."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise self._refusal(response, references)
        return response

    def _refusal(self, response: httpx.Response, references: Iterable[str | None]) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = {"error": "HTTPError", "detail": response.text[:500]}
        detail = str(body.get("detail", ""))
        if response.status_code == 401 and self._stored:
            detail += "; run `rackhand login` again"
        # Only a 404 that names what the user typed is their typo; another one (a wrong URL, a
        # job gone) stays a failure.
        missing = response.status_code == 404 and any(
            f"'{name}'" in detail for name in references if name
        )
        return ApiError(
            response.status_code,
            str(body.get("error", "HTTPError")),
            detail,
            body.get("errors"),
            bad_reference=missing,
        )

    def _unreachable(self, exc: httpx.TransportError) -> ApiError:
        cause = next((e for e in _chain(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)
        if cause is None:
            return ApiError(
                0, "Unreachable", redact_urls(f"cannot reach {self._http.base_url}: {exc}")
            )
        return ApiError(
            0,
            "Untrusted",
            f"cannot verify the TLS certificate of {redact_urls(str(self._http.base_url))}: "
            f"{cause.verify_message}; "
            "if the central's certificate comes from a private CA, give that CA with "
            "--ca-cert PEM (or RACKHAND_CA_CERT, `ca_cert` in config.toml, SSL_CERT_FILE)",
        )

    @contextmanager
    def stream(
        self, path: str, params: dict[str, Any], references: Iterable[str | None] = ()
    ) -> Iterator[Iterator[bytes]]:
        """GET a streamed body; API errors raise before the first byte is handed out."""
        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refusal(response, references)
                yield _whole(response.iter_bytes())
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def get(self, path: str, *, references: Iterable[str | None] = (), **params: Any) -> Any:
        return self.request("GET", path, params=params, references=references).json()


def _whole(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The body's chunks; a body that ends before its end is an error, never a short file."""
    try:
        yield from chunks
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise ApiError(
            0,
            "Incomplete",
            f"the download ended before its end ({exc}), so what was written is incomplete; "
            "the server cuts off an export that is not read for a while (a pager or a pipe "
            "that waits): write it to a file with -o, then read that",
        ) from exc


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes: httpx wraps the ssl module's error twice."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__
