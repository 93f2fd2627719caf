"""The API docs page loads Swagger UI from Rackhand itself, so it works with no internet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.web.assets import CACHE_CONTROL, SWAGGER_UI

DOCS = "/api/v1/docs"
REFERENCE = re.compile(r"""(?:href|src)="([^"]+)"|url: '([^']+)'""")


def _references(html: str) -> list[str]:
    return [first or second for first, second in REFERENCE.findall(html)]


def test_the_docs_page_references_only_its_own_site(web: TestClient) -> None:
    page = web.get(DOCS)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "cdn.jsdelivr" not in page.text
    assert re.findall(r"(?:https?:)?//[\w.-]+", page.text) == []  # no URL names another host
    references = _references(page.text)
    assert len(references) == 4, references  # stylesheet, icon, script, OpenAPI document
    assert all(ref.startswith("/") and not ref.startswith("//") for ref in references)
    assert "/api/v1/openapi.json" in references
    assert f"'{DOCS}/oauth2-redirect'" in page.text


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("favicon-32x32.png", "image/png"),
    ],
)
def test_the_files_it_loads_are_served_without_a_credential(
    web: TestClient, name: str, content_type: str
) -> None:
    url = next(ref for ref in _references(web.get(DOCS).text) if name in ref)
    assert url.endswith(f"?v={SWAGGER_UI.version()}")  # an upgrade changes the URL
    served = web.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"].split(";")[0] in (
        content_type,
        content_type.replace("text/javascript", "application/javascript"),
    )
    assert served.headers["cache-control"] == CACHE_CONTROL
    assert served.content == (SWAGGER_UI.folder / name).read_bytes()


def test_the_oauth2_redirect_page_is_served(web: TestClient) -> None:
    page = web.get(f"{DOCS}/oauth2-redirect")
    assert page.status_code == 200
    assert "oauth2" in page.text
    assert re.findall(r"https?://", page.text) == []


def test_the_pages_stay_out_of_the_openapi_document(web: TestClient) -> None:
    paths = web.get("/api/v1/openapi.json").json()["paths"]
    assert [path for path in paths if "docs" in path or "static" in path] == []


def test_a_file_outside_the_static_folder_is_not_served(web: TestClient) -> None:
    assert web.get("/static/../main.py").status_code == 404
    assert web.get("/static/vendor/swagger-ui/absent.js").status_code == 404


def test_without_make_install_the_page_says_so_instead_of_staying_blank(
    web: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SWAGGER_UI, "folder", tmp_path / "absent")
    page = web.get(DOCS)
    assert page.status_code == 503
    assert page.json()["error"] == "AssetsMissing"
    assert "make install" in page.json()["detail"]
