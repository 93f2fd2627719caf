"""The API docs page (Swagger UI), its OAuth2 redirect page and the static files they load.

FastAPI's own docs page loads Swagger UI from a CDN, so it is blank on a network with no
internet; this one loads the copy `make install` put in `app/web/static/vendor/`.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import Response

from app.error_body import error_response
from app.web.assets import INSTALL_HINT, SWAGGER_UI, URL, static_files

# Swagger UI would show a badge fetched from validator.swagger.io: no request leaves the site.
_PARAMETERS = {"validatorUrl": None}


def install_docs(app: FastAPI, docs_url: str, openapi_url: str) -> None:
    """Serve `/static/` and the docs page at `docs_url` (create the app with `docs_url=None`).

    Plain Starlette routes, outside the OpenAPI document and the query-parameter guard; no
    credential is asked: the page and the files are public, the API calls it makes are not.
    """
    redirect_url = f"{docs_url}/oauth2-redirect"

    async def docs_page(request: Request) -> Response:
        missing = SWAGGER_UI.missing()
        if missing:
            return error_response(
                503,
                "AssetsMissing",
                f"the docs page's Swagger UI files are not installed ({', '.join(missing)} "
                f"missing from {SWAGGER_UI.folder}); {INSTALL_HINT}",
            )
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=SWAGGER_UI.url(root, "swagger-ui-bundle.js"),
            swagger_css_url=SWAGGER_UI.url(root, "swagger-ui.css"),
            swagger_favicon_url=SWAGGER_UI.url(root, "favicon-32x32.png"),
            oauth2_redirect_url=root + redirect_url,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=_PARAMETERS,
        )

    async def oauth2_redirect(_: Request) -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    app.mount(URL, static_files(), name="static")
    app.add_route(docs_url, docs_page, include_in_schema=False)
    app.add_route(redirect_url, oauth2_redirect, include_in_schema=False)
