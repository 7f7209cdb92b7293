"""``/audit``: the audit log (a tenant-bound reader sees its tenant's lines only)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request

from stasis.api.guard import GuardedRoute, needs, principal
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.app import accounts
from stasis.app.auth import Principal
from stasis.app.models import AuditLine

router = APIRouter(route_class=GuardedRoute, tags=["audit"])

# The lines a listing is paged over: the newest of those the filters keep.
WINDOW = 10_000


@router.get("/audit", openapi_extra=needs("audit:read"), response_model=Page[AuditLine])
def audit(request: Request,
          user: str | None = Query(None, description="lines of this user"),
          action: str | None = Query(None, description="actions starting with this "
                                                       "(login, token., backup.start)"),
          since: datetime | None = Query(None, description="lines at or after this time"),
          q: ListQuery = Depends(list_query),
          who: Principal = Depends(principal)) -> Page[AuditLine]:
    """Who did what to which object, when, and how it ended; newest first."""
    lines = accounts.list_audit(request.app.state.ctx.catalog, user=user, action=action,
                                since=since, limit=WINDOW,
                                tenant=None if who.tenant is None else who.tenant.name)
    return paginate(lines, q, sorts={"id": lambda a: a.id, "time": lambda a: a.time},
                    default="-id", ident=lambda a: a.id)
