"""The FastAPI application of ``stasis serve``, built for one :class:`ApiContext`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stasis import __version__
from stasis.api import problems
from stasis.api.context import ApiContext
from stasis.errors import RequestTooLarge

PREFIX = "/api/v1"


class BodyLimit:
    """Refuses a request body larger than ``limit`` bytes (413) before a route reads it:
    by its Content-Length when it has one, else while it streams in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = RequestTooLarge(f"The request body is larger than the {self.limit} "
                                    "bytes the server accepts. Nothing was done.")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await problems.of_error(too_large, scope["path"])(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited, send)


def create_app(ctx: ApiContext) -> FastAPI:
    """The API over ``ctx``: every router of :mod:`stasis.api.routes` under /api/v1,
    and the web console at / (:mod:`stasis.api.routes.console`)."""
    from fastapi.staticfiles import StaticFiles

    from stasis.api.routes import ROOT_ROUTERS, ROUTERS, console
    from stasis.api.routes.docs import ASSETS, assets_dir

    app = FastAPI(title="Stasis", version=__version__, openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="Backup and disaster recovery for libvirt/KVM virtual "
                              "machines. Every operation names the permission it needs "
                              "(x-permission); errors are RFC 9457 problem+json.")
    app.state.ctx = ctx
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)
    for router in ROOT_ROUTERS:
        app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
    app.mount(console.ASSETS, console.ConsoleFiles(directory=console.static_dir()),
              name="console")
    app.add_middleware(BodyLimit, limit=ctx.max_body)
    return app


def openapi(ctx: ApiContext) -> dict[str, Any]:
    """The OpenAPI document of the API (for the docs and the tests)."""
    return create_app(ctx).openapi()
