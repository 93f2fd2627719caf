"""Request body limits, enforced before a large or deeply nested body reaches a handler."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.error_body import error_bytes

MAX_JSON_DEPTH = 32
TOO_DEEP = f"nests deeper than {MAX_JSON_DEPTH} levels of objects and arrays; flatten it"
_IN_THREAD = 256 * 1024  # bytes: a larger body is measured off the event loop
_KEEP = bytes.maketrans(b"{}", b"[]")
_DROP = bytes(b for b in range(256) if b not in b'"[]{}')


def nests_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests objects and arrays deeper than `limit`, told without parsing it.

    Parsers recurse once per level, so a deep text exhausts the stack (a `RecursionError`
    where the parser is Python's, a depth error in the serializer later where it is not).
    Every step is a linear pass in C: escapes and string contents go (an unterminated string
    runs to the end, as a parser reads it), then innermost pairs are removed level by level;
    brackets left unpaired count as levels.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    plain = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_KEEP, _DROP)
    brackets = b"".join(plain.split(b'"')[0::2])
    for level in range(limit + 1):
        shorter = brackets.replace(b"[]", b"")
        if shorter == brackets:
            return level + brackets.count(b"[") > limit
        brackets = shorter
    return True


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

    Also refuses NUL in the URL, which no database column can store, and a JSON body nested
    deeper than `MAX_JSON_DEPTH`.
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
        if _is_json(headers) and await _nests_too_deep(bytes(body)):
            await _refuse(send, 422, "InvalidInput", f"the JSON body {TOO_DEEP}")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _is_json(headers: dict[bytes, bytes]) -> bool:
    """As FastAPI decides to parse a body as JSON: no Content-Type, or application/(*+)json."""
    media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return media in (b"", b"application/json") or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


async def _nests_too_deep(body: bytes) -> bool:
    if len(body) > _IN_THREAD:
        return await asyncio.to_thread(nests_too_deep, body)
    return nests_too_deep(body)


def _message(limit: int) -> str:
    return f"the request body is over {limit} bytes; send less (split an import into parts)"


async def _refuse(send: Send, status: int, kind: str, detail: str) -> None:
    body = error_bytes(kind, detail)
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
