"""Request body limits, enforced before a large body reaches a handler."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Refusal:
    """Why a request's credential does not work, as the answer says it."""

    status: int
    kind: str
    detail: str


Authenticate = Callable[[Scope], Awaitable[Refusal | None]]


class BodyLimit:
    """Refuse bodies over `default` bytes (or a larger limit for listed path suffixes).

    The body is read here, within the limit, and handed on whole: a handler never starts on a
    body that will turn out too large (nor holds a write transaction while it trickles in).
    Only a caller whose credential works (`authenticate`, asked before a byte of the body is
    read) gets a larger limit: anyone else's body stops at `default`, so an anonymous client
    cannot make the server hold 64 MiB per connection.

    Also refuses NUL in the URL, which no database column can store.
    """

    def __init__(
        self, app: ASGIApp, default: int, larger: dict[str, int], authenticate: Authenticate
    ) -> None:
        self.app = app
        self.default = default
        self.larger = larger
        self.authenticate = authenticate

    def _limit(self, path: str) -> int:
        for suffix, limit in self.larger.items():
            if path.endswith(suffix):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"%00" in scope.get("raw_path", b"") or b"%00" in scope["query_string"]:
            await _refuse(send, 422, "InvalidInput", "the URL may not contain NUL (%00) characters")
            return
        limit = self._limit(scope["path"])
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        if length is not None and length > limit:
            await _refuse(send, 413, "BodyTooLarge", _message(limit))
            return
        body_follows = declared is not None or b"transfer-encoding" in headers
        if limit > self.default and body_follows and (length is None or length > self.default):
            refusal = await self.authenticate(scope)
            if refusal is not None:
                detail = (
                    f"{refusal.detail} (a body over {self.default} bytes is read only from a "
                    "caller who is logged in)"
                )
                await _refuse(send, refusal.status, refusal.kind, detail)
                return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _refuse(send, 413, "BodyTooLarge", _message(limit))
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _message(limit: int) -> str:
    return f"the request body is over {limit} bytes; send less (split an import into parts)"


async def _refuse(send: Send, status: int, kind: str, detail: str) -> None:
    body = json.dumps({"error": kind, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
