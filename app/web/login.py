"""`/login`: the form posts to the API's own login (`POST /api/v1/auth/login`), whose session
cookie and CSRF cookie the pages then use; logging out is the API's `POST /auth/logout`."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Query, Request
from starlette.responses import Response

from app.web.pages import page_router, render

router = page_router()


def safe_next(given: str | None) -> str:
    """Where to go after login: a path of this site only (an open redirect would let a link
    in a phishing mail send the freshly logged-in operator elsewhere). Browsers drop tabs and
    line breaks from URLs and read a backslash as `/`: "/", a tab, "/evil.example" would be
    "//evil.example", another host."""
    if not given or any(ord(char) < 0x20 or ord(char) == 0x7F for char in given):
        return "/"
    parts = urlsplit(given.replace("\\", "/"))
    if parts.scheme or parts.netloc or not given.startswith("/") or given[1:2] in ("/", "\\"):
        return "/"
    return given


@router.get("/login")
async def login_page(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    return render(request, "login.html", back=safe_next(next))
