"""``/status``: how protected each VM is (newest point, RPO met or breached, next run,
newest drill); ``/group-status``: each group as a whole (newest group point, newest
drill against the drill targets)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from stasis.api.guard import GuardedRoute, needs, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes.common import context, repository
from stasis.app.models import GroupStatusRow, VmStatusRow
from stasis.app.scope import Scope
from stasis.app.status import group_status, vm_status
from stasis.errors import VmNotFound
from stasis.repository import Repository

router = APIRouter(route_class=GuardedRoute, tags=["status"])

SORTS = {"vm": lambda r: r.vm, "age": lambda r: r.age_s, "rpo": lambda r: r.rpo}


def _rows(request: Request, where: Scope, repo: Repository) -> list[VmStatusRow]:
    rows = vm_status(context(request).catalog, open_repo=lambda: repo)
    return [r for r in rows if where.owns_vm(r.vm)]


@router.get("/status", openapi_extra=needs("status:read"), response_model=Page[VmStatusRow])
def list_status(request: Request, where: Scope = Depends(scope),
                q: ListQuery = Depends(list_query), repo: Repository = Depends(repository),
                vm: str | None = Query(None, description="only this VM"),
                policy: str | None = Query(None, description="only VMs this policy covers"),
                state: Literal["met", "breached", "none"] | None = Query(
                    None, description="only VMs whose RPO is met, breached, or none set"),
                ) -> Page[VmStatusRow]:
    """Per VM (a tenant's own, for a tenant): its newest point and age in the chosen
    repository, its next run, its RPO."""
    rows = [r for r in _rows(request, where, repo)
            if (vm is None or r.vm == vm) and (policy is None or policy in r.policies)
            and (state is None or r.rpo == state)]
    return paginate(rows, q, sorts=SORTS, default="vm", ident=lambda r: r.vm)


@router.get("/status/{vm}", openapi_extra=needs("status:read"), response_model=VmStatusRow)
def get_status(request: Request, vm: str = Path(), where: Scope = Depends(scope),
               repo: Repository = Depends(repository)) -> VmStatusRow:
    ctx = context(request)
    where.check_vm(vm, ctx.connect)
    for r in _rows(request, where, repo):
        if r.vm == vm:
            return r
    raise VmNotFound(vm, "the status of the catalog (no point, policy or job of it)")


GROUP_SORTS = {"group": lambda r: r.group, "age": lambda r: r.age_s}


@router.get("/group-status", openapi_extra=needs("status:read"),
            response_model=Page[GroupStatusRow])
def list_group_status(request: Request, where: Scope = Depends(scope),
                      q: ListQuery = Depends(list_query),
                      repo: Repository = Depends(repository),
                      state: Literal["met", "breached", "none"] | None = Query(
                          None, description="only groups whose drill target is met, "
                                            "breached, or none set"),
                      ) -> Page[GroupStatusRow]:
    """Per group (for a tenant, those whose VMs are all its own): its newest group point
    and age in the chosen repository, the policies naming it, its newest drill."""
    rows = [r for r in group_status(context(request).catalog, open_repo=lambda: repo)
            if (where.everything or (r.vms and all(where.owns_vm(v) for v in r.vms)))
            and (state is None or (r.drill.state if r.drill else "none") == state)]
    return paginate(rows, q, sorts=GROUP_SORTS, default="group", ident=lambda r: r.group)
