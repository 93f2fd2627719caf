"""Front-end files (npm packages) served by Rackhand itself, never fetched from a CDN.

Operators run Rackhand on networks with no way out to the internet: a page whose scripts come
from a CDN is blank there. `make install` runs `npm ci` in `web/` (versions pinned by its
lockfile) and copies each package's dist files into `static/vendor/<package>/`; this module
serves that folder at `/static/`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
URL = "/static"
# A week: the pages ask for `?v=<package version>`, so an upgrade is fetched at once anyway.
CACHE_CONTROL = "public, max-age=604800"
INSTALL_HINT = "run `make install` (it needs Node.js and npm: `apt-get install nodejs npm`)"


class Vendored:
    """One npm package's files as copied by `make install`, and where the browser finds them."""

    def __init__(self, package: str, files: tuple[str, ...]) -> None:
        self.package = package
        self.files = files
        self.folder = VENDOR / package

    def missing(self) -> list[str]:
        """Files `make install` should have copied but did not (empty when installed)."""
        return [name for name in self.files if not (self.folder / name).is_file()]

    def version(self) -> str:
        """The package's version, for cache-busting URLs ("" when unknown)."""
        try:
            manifest = json.loads((self.folder / "package.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        return str(manifest.get("version", ""))

    def url(self, root_path: str, name: str) -> str:
        version = self.version()
        return f"{root_path}{URL}/vendor/{self.package}/{name}" + (
            f"?v={version}" if version else ""
        )


SWAGGER_UI = Vendored(
    "swagger-ui", ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "package.json")
)
# The dashboard's libraries (web/package.json); the folder names are the Makefile's.
PICO = Vendored("pico", ("pico.min.css", "package.json"))
HTMX = Vendored("htmx", ("htmx.min.js", "package.json"))
XTERM = Vendored("xterm", ("xterm.js", "xterm.css", "package.json"))
XTERM_FIT = Vendored("xterm-fit", ("addon-fit.js", "package.json"))
ASCIINEMA_PLAYER = Vendored(
    "asciinema-player", ("asciinema-player.min.js", "asciinema-player.css", "package.json")
)
DASHBOARD = (PICO, HTMX, XTERM, XTERM_FIT, ASCIINEMA_PLAYER)


def own_url(root_path: str, name: str) -> str:
    """One of Rackhand's own files in `static/` (not vendor/), versioned by its content."""
    return f"{root_path}{URL}/{name}?v={_digest(name)}"


@functools.cache
def _digest(name: str) -> str:
    """A short hash of the file, read once per process: a new release is fetched at once."""
    try:
        return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]
    except OSError:
        return "missing"


class CachedStaticFiles(StaticFiles):
    """Starlette's static files with a cache header: they are public library files, change
    only with an upgrade, and are the bulk of what a page loads."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = CACHE_CONTROL
        return response


def static_files() -> CachedStaticFiles:
    """The `/static/` app; it starts without the vendor folder (a missing file is a 404)."""
    return CachedStaticFiles(directory=STATIC, check_dir=False)
