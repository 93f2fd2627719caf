"""What every dashboard page shares: who is looking (the session cookie, as the API reads it),
the templates, and errors answered as pages rather than JSON.

Pages only read: they call the same services as the API with the viewer's own context, so a
page shows exactly what the API would answer that user. Every change a page offers is made
by the browser through the REST API (`static/rackhand.js`), under the API's rules and audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from app.context import RequestContext, request_id
from app.deps import SessionDep
from app.errors import Unauthenticated
from app.identity import service
from app.identity.auth import SESSION_COOKIE, source_ip
from app.identity.models import Role
from app.identity.rejections import Presented, Rejection
from app.web.assets import DASHBOARD, INSTALL_HINT, own_url

TEMPLATES = Path(__file__).parent / "templates"
LOGIN = "/login"
# Never pages: the API, the files, and the docs (Swagger UI runs an inline script of its own).
_NOT_PAGES = ("/api/", "/static/")
# Scripts from Rackhand only, and no inline script at all: what a page shows of stored data
# (device names, audit details) can never run. xterm.js and htmx set inline styles.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",  # pages hold fleet data: never kept by a shared cache
}


class PageRoute(APIRoute):
    """A dashboard page: its errors are answered as pages (`error_page`), not JSON."""


def is_page(request: Request) -> bool:
    """A page's request; for a path no route serves, a browser's (one that asks for HTML)
    outside the API, so a script with a wrong URL still gets the API's JSON error."""
    route = request.scope.get("route")
    if route is not None:
        return isinstance(route, PageRoute)
    path: str = request.scope.get("path", "")
    wants_html = "text/html" in request.headers.get("accept", "")
    return not path.startswith(_NOT_PAGES) and (
        wants_html or request.headers.get("HX-Request") == "true"
    )


def _asset(package: str, name: str, root: str = "") -> str:
    for vendored in DASHBOARD:
        if vendored.package == package:
            return vendored.url(root, name)
    raise KeyError(f"{package!r} is not one of the dashboard's packages (app/web/assets.py)")


templates = Jinja2Templates(directory=TEMPLATES)
templates.env.globals.update(vendor=_asset, own=lambda name: own_url("", name))


@dataclass(frozen=True)
class Viewer:
    """The person looking at a page: their context for the services, and the page's session."""

    request: Request
    session: AsyncSession
    ctx: RequestContext

    @property
    def username(self) -> str:
        return self.ctx.principal.actor.name

    def can(self, role: Role, site_id: int | None = None) -> bool:
        """Whether the viewer holds `role` at the site (None: on every site); pages show an
        action only to those the API would let do it."""
        held = self.ctx.principal.role_at(site_id)
        return held is not None and held.rank >= role.rank

    def can_anywhere(self, role: Role) -> bool:
        return any(held.rank >= role.rank for held, _ in self.ctx.principal.grants)

    def render(self, template: str, status_code: int = 200, **values: Any) -> Response:
        return render(self.request, template, status_code, viewer=self, **values)


def render(request: Request, template: str, status_code: int = 200, **values: Any) -> Response:
    missing = [name for vendored in DASHBOARD for name in vendored.missing()]
    if missing:
        values["assets_missing"] = f"the dashboard's front-end files are missing; {INSTALL_HINT}"
    response = templates.TemplateResponse(request, template, values, status_code=status_code)
    response.headers.update(HEADERS)
    return response


async def viewer(request: Request, session: SessionDep) -> Viewer:
    """The session cookie's user, or a redirect to the login page (app.main's error table
    turns a page's `Unauthenticated` into one)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("log in to see this page")
    found = await service.principal_for_session(session, cookie)
    if found is None:
        raise Unauthenticated(
            "your session has ended; log in again",
            Rejection.of(
                Presented.SESSION,
                source_ip(request),
                None,
                request.url.path,
                request.headers.get("user-agent"),
            ),
        )
    ctx = RequestContext(
        principal=found[0],
        source_ip=source_ip(request),
        request_id=request_id(request.headers.get("x-request-id")),
    )
    return Viewer(request, session, ctx)


ViewerDep = Annotated[Viewer, Depends(viewer)]


def link(path: str, query: Mapping[str, str]) -> str:
    """A page's URL with its query, empty values left out (every list's links keep their
    filters this way: short, linkable, the same in every page)."""
    kept = {name: value for name, value in query.items() if value}
    return f"{path}?{urlencode(kept)}" if kept else path


def page_router() -> APIRouter:
    """A router of pages: left out of the OpenAPI document (they are not the API)."""
    return APIRouter(include_in_schema=False, route_class=PageRoute)


def error_page(request: Request, status_code: int, detail: str) -> Response:
    """A refusal or failure on a page, said as a page; an unauthenticated viewer is sent to log
    in, and comes back here afterwards."""
    if status_code == 401:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = f"{LOGIN}?next={quote(back, safe='/')}"
        if request.headers.get("HX-Request") == "true":  # htmx would swap the login page in
            return Response(status_code=204, headers={"HX-Redirect": login})
        return RedirectResponse(login, status_code=303)
    return render(request, "error.html", status_code, status=status_code, detail=detail)
