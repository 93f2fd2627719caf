"""The body of every error answer, and its place in the OpenAPI document.

FastAPI documents a 422 of its own (`HTTPValidationError`, `detail` a list of objects); ours
is `{"error", "detail"}` with `detail` one sentence, so the document publishes this model for
every error status instead, and clients generated from it can read what they are sent.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field


class RowError(BaseModel):
    """One bad row of an import."""

    model_config = ConfigDict(extra="forbid")

    row: int = Field(description="line of a CSV file, or position in a JSON list (from 1)")
    field: str
    message: str


class ErrorBody(BaseModel):
    """What went wrong, and what to do about it; inputs are never echoed (they may be secrets)."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(
        description="the kind of error, e.g. ValidationError, InvalidInput, NotFound, Forbidden",
        examples=["ValidationError"],
    )
    detail: str = Field(
        description="one message saying what to fix", examples=["name: Field required"]
    )
    errors: list[RowError] = Field(
        default_factory=list,
        description="an import's bad rows, all of them (sent only when an import is rejected)",
    )


def error_response(status: int, kind: str, detail: str, **extra: Any) -> JSONResponse:
    body = ErrorBody(error=kind, detail=detail, **extra)
    return JSONResponse(body.model_dump(exclude_unset=True), status_code=status)


def error_bytes(kind: str, detail: str) -> bytes:
    """The body for an answer sent below FastAPI (the ASGI middleware)."""
    return ErrorBody(error=kind, detail=detail).model_dump_json(exclude_unset=True).encode()


# Declared on the app, so every operation lists them and FastAPI adds no 422 of its own.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "The request is malformed or breaks a rule"},
    "4XX": {"model": ErrorBody, "description": "Refused; `detail` says why and what to do"},
    "5XX": {"model": ErrorBody, "description": "A device or the server failed"},
}
