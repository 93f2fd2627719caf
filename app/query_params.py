"""Query parameters a route does not declare are refused, never silently ignored.

`GET /jobs?tiket=INC-42` used to list every job: a misspelt filter looked like an empty one.
One app-wide dependency compares the query string with the parameters FastAPI found in the
route's signature and its dependencies, for HTTP and WebSocket routes alike.
"""

from __future__ import annotations

import difflib

from fastapi import params
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.requests import HTTPConnection

from app.errors import UnknownParameter

_SHOWN = 40  # characters of an unknown name quoted back


class QueryGuard:
    """The dependency; each route's declared names are read once, on its first request."""

    def __init__(self) -> None:
        # Keyed by id(): routes live as long as the app, which holds this guard.
        self._declared: dict[int, frozenset[str]] = {}

    async def __call__(self, conn: HTTPConnection) -> None:
        if not conn.scope.get("query_string"):
            return
        route = conn.scope.get("route")
        if not isinstance(route, APIRoute | APIWebSocketRoute):
            return
        declared = self._declared.get(id(route))
        if declared is None:
            declared = self._declared[id(route)] = frozenset(
                field.alias
                for field in get_flat_params(route.dependant)
                if isinstance(field.field_info, params.Query)
            )
        unknown = [name for name in conn.query_params if name not in declared]
        if unknown:
            raise UnknownParameter(_message(unknown, declared))


def _message(unknown: list[str], declared: frozenset[str]) -> str:
    names = ", ".join(repr(name[:_SHOWN]) for name in unknown)
    plural = "s" if len(unknown) > 1 else ""
    hint = difflib.get_close_matches(unknown[0], declared, n=1)
    guess = f" (did you mean {hint[0]!r}?)" if hint else ""
    takes = (
        f"this endpoint takes: {', '.join(sorted(declared))}"
        if declared
        else "this endpoint takes no query parameters"
    )
    return f"unknown query parameter{plural} {names}{guess}; {takes}"
