"""Request body limits, enforced before a large body reaches a handler."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Refuse bodies over `default` bytes (or a larger limit for listed path suffixes).

    The body is read here, within the limit, and handed on whole: a handler never starts on a
    body that will turn out too large.

    Also refuses NUL in the URL, which no database column can store.
    """

    def __init__(self, app: ASGIApp, default: int, larger: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.larger = larger

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
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, 413, "BodyTooLarge", _message(limit))
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
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
