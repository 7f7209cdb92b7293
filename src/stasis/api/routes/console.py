"""The web console: its page at ``/`` and its static files under ``/console/``, every
one served by this server (the page's Content-Security-Policy forbids anything from
elsewhere). The console is plain HTML, CSS and JavaScript modules, with no build step;
it reads and changes everything through the API under /api/v1, as any client does.

Files are sent with ``Cache-Control: no-cache`` and an ETag: a browser keeps them and
asks again with ``If-None-Match`` (304), so a new version is seen at the next load
while an unchanged one costs a round trip and no bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from stasis.api.guard import GuardedRoute, needs
from stasis.app.auth import PUBLIC

router = APIRouter(route_class=GuardedRoute, tags=["console"])
ASSETS = "/console"

# Everything from this origin only, and nothing inline (scripts and styles are files).
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
          "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
          "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": POLICY,
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def static_dir() -> Path:
    """The console's files, as the package ships them."""
    return Path(__file__).resolve().parents[2] / "console" / "static"


class ConsoleFiles(StaticFiles):
    """The console's static files, with the headers above."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result,
                      scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(HEADERS)
        return response


@router.get("/", openapi_extra=needs(PUBLIC), include_in_schema=False)
def index() -> FileResponse:
    """The console's one page (it signs in and loads the rest itself)."""
    return FileResponse(static_dir() / "index.html", media_type="text/html",
                        headers=HEADERS)
