"""What a dashboard draws over time: ``/history`` (the last days of each VM and group:
points made, RPO met or breached), ``/copy-lag`` (each second site's lag behind its
source) and ``/repositories/{name}/usage`` (used space, growth and when it fills)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from stasis.api.guard import GuardedRoute, needs, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes.common import context, repository
from stasis.app import dashboard as ops
from stasis.app.models import CopyLagRow, ProtectionHistory, RepoUsage
from stasis.app.scope import Scope
from stasis.app.status import vm_status
from stasis.repository import Repository

router = APIRouter(route_class=GuardedRoute, tags=["status"])

DaysQuery = Query(30, ge=1, le=ops.MAX_DAYS, description="days back from today (UTC)")


@router.get("/history", openapi_extra=needs("status:read"),
            response_model=Page[ProtectionHistory])
def list_history(request: Request, where: Scope = Depends(scope),
                 q: ListQuery = Depends(list_query), repo: Repository = Depends(repository),
                 days: int = DaysQuery,
                 kind: Literal["vm", "group"] | None = Query(None, description="only VMs "
                                                             "or only groups"),
                 ) -> Page[ProtectionHistory]:
    """Per VM and group (a tenant's own, for a tenant), oldest day first: the points
    made each day in the chosen repository, and whether the RPO was met all day."""
    rows = ops.history(context(request).catalog, lambda: repo, days=days,
                       owns_vm=where.owns_vm, owns_group=where.owns_defined)
    rows = [r for r in rows if kind is None or r.kind == kind]
    return paginate(rows, q, sorts={"name": lambda r: (r.kind, r.name)}, default="name",
                    ident=lambda r: f"{r.kind}:{r.name}")


@router.get("/copy-lag", openapi_extra=needs("status:read"),
            response_model=Page[CopyLagRow])
def list_copy_lag(request: Request, where: Scope = Depends(scope),
                  q: ListQuery = Depends(list_query), repo: Repository = Depends(repository),
                  ) -> Page[CopyLagRow]:
    """Per second site of each policy that copies (over a tenant's own VMs, for a
    tenant): its VMs, those with no copy there yet, and the worst lag."""
    rows = [r for r in vm_status(context(request).catalog, open_repo=lambda: repo)
            if where.owns_vm(r.vm)]
    return paginate(ops.copy_lag(rows), q, sorts={"policy": lambda r: r.policy,
                                                  "lag": lambda r: r.lag_s},
                    default="policy", ident=lambda r: f"{r.policy}:{r.repo_id}")


@router.get("/repositories/{name}/usage", openapi_extra=needs("repositories:read"),
            response_model=RepoUsage)
def get_usage(request: Request, name: str = Path(), days: int = DaysQuery) -> RepoUsage:
    """A served repository's used space and deduplication, its size at the end of each
    day, its growth per day and (on a local filesystem) the day it fills."""
    ctx = context(request)
    return ops.usage(name, ctx.repository(name), now=ctx.catalog.clock.now(), days=days)
