"""``/drills``: start a recovery drill as a job (202), and the newest drill of each VM
and group. Drills are the system's: a tenant's principal may read the newest drills of
its own VMs, and may not start one (see :mod:`stasis.app.start`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from stasis.api.guard import GuardedRoute, needs, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes._work import REPOSITORY_QUERY, STARTED, WorkBody, start
from stasis.api.routes.common import context
from stasis.app.drill import newest_drills, parse_checks
from stasis.app.models import DrillRecordModel, JobStarted
from stasis.app.scope import Scope

router = APIRouter(route_class=GuardedRoute, tags=["drills"])


class DrillBody(WorkBody):
    """A drill of a point, or of a VM's or a group's newest point (docs/drills.md)."""

    target: str = Field(description="a point (id, unique prefix, NAME@latest), or a VM's "
                                    "or a group's name")
    mode: Literal["restore", "instant"] = "restore"
    network: str | None = Field(None, description="an isolated network (default: one of "
                                                  "the drill's own)")
    checks: list[str] = Field([], description="as --check takes them: "
                                              "KIND[@VM][~SECONDS][:ARG]")
    check_timeout: float = Field(120.0, gt=0, description="seconds, for a check that "
                                                           "gives none")
    order: list[str] | None = Field(None, description="the VMs' start order")
    storage: Path | None = Field(None, description="where the disks or overlays go")
    pool: str | None = Field(None, description="a restore drill's disks as volumes of this "
                                               "libvirt storage pool (not with storage)")
    keep: bool = False


@router.post("/drills", openapi_extra=needs("restores:run"), status_code=202,
             response_model=JobStarted, responses=STARTED)
def post_drill(body: DrillBody, request: Request,
               repository: str | None = REPOSITORY_QUERY,
               where: Scope = Depends(scope)) -> JSONResponse:
    """Start a drill as a job (202 with the job)."""
    params = {"target": body.target, "mode": body.mode, "keep": body.keep,
              "checks": [c.model_dump(mode="json")
                         for c in parse_checks(body.checks, body.check_timeout)]}
    for f in ("network", "order", "storage", "pool"):
        if getattr(body, f) is not None:
            params[f] = body.model_dump(mode="json")[f]
    return start(request, where, body, "drill", params, repository)


SORTS = {"subject": lambda r: (r.subject_kind, r.subject), "ended": lambda r: r.ended}


@router.get("/drills", openapi_extra=needs("status:read"),
            response_model=Page[DrillRecordModel])
def list_drills(request: Request, where: Scope = Depends(scope),
                q: ListQuery = Depends(list_query),
                kind: Literal["vm", "group"] | None = Query(None, description="only VMs' "
                                                                               "or groups'"),
                passed: bool | None = Query(None, description="only passed or failed ones"),
                ) -> Page[DrillRecordModel]:
    """The newest drill of each VM and group (a tenant's own VMs', for a tenant)."""
    rows = [r for r in newest_drills(context(request).catalog)
            if (kind is None or r.subject_kind == kind)
            and (passed is None or r.passed == passed)
            and (where.everything or (r.subject_kind == "vm" and where.owns_vm(r.subject)))]
    return paginate(rows, q, sorts=SORTS, default="subject",
                    ident=lambda r: f"{r.subject_kind}:{r.subject}")
