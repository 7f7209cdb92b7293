"""``/repositories``: the repositories the server serves, with ``stasis repo info``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request

from stasis.api.guard import GuardedRoute, needs
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes.common import context
from stasis.app.models import ServedRepository
from stasis.app.repos import served

router = APIRouter(route_class=GuardedRoute, tags=["repositories"])

SORTS = {"name": lambda r: r.name}


@router.get("/repositories", openapi_extra=needs("repositories:read"),
            response_model=Page[ServedRepository])
def list_repositories(request: Request, q: ListQuery = Depends(list_query)
                      ) -> Page[ServedRepository]:
    """The served repositories: name, URL (without secrets), sizes and ratios."""
    ctx = context(request)
    rows = [served(n, r, default=n == ctx.default_repository)
            for n, r in ctx.repositories.items()]
    return paginate(rows, q, sorts=SORTS, default="name", ident=lambda r: r.name)


@router.get("/repositories/{name}", openapi_extra=needs("repositories:read"),
            response_model=ServedRepository)
def get_repository(request: Request, name: str = Path()) -> ServedRepository:
    ctx = context(request)
    return served(name, ctx.repository(name), default=name == ctx.default_repository)
