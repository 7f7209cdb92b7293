"""The browsable API documentation (Swagger UI and ReDoc over /api/v1/openapi.json),
served with every asset from this server: no request leaves for a CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from stasis.api.guard import GuardedRoute, needs
from stasis.app.auth import PUBLIC

router = APIRouter(route_class=GuardedRoute, tags=["docs"])
ASSETS = "/api/v1/docs-assets"


def assets_dir() -> Path:
    """The Swagger UI and ReDoc files, as the fastapi-offline package ships them."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


@router.get("/docs", openapi_extra=needs(PUBLIC), include_in_schema=False)
def swagger() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/api/v1/openapi.json", title="Stasis API",
                               swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSETS}/favicon.png")


@router.get("/redoc", openapi_extra=needs(PUBLIC), include_in_schema=False)
def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/api/v1/openapi.json", title="Stasis API",
                          redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                          redoc_favicon_url=f"{ASSETS}/favicon.png", with_google_fonts=False)
