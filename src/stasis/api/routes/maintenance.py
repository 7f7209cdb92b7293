"""``/verifications``, ``/prunes``, ``/gc``, ``/copies``: work on a whole repository,
as jobs. They are the system's: a tenant's principal is refused them (403), whatever
its role. A prune with ``dry_run`` answers its decisions at once (200), deleting
nothing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from stasis.api.guard import GuardedRoute, needs, scope
from stasis.api.routes._work import (
    REPOSITORY_QUERY,
    STARTED,
    WorkBody,
    ctx_of,
    given,
    served,
    start,
)
from stasis.app.models import JobStarted, PruneReport
from stasis.app.scope import Scope
from stasis.errors import UsageError

router = APIRouter(route_class=GuardedRoute, tags=["maintenance"])
MAINTAIN = needs("repositories:maintain")


def _served_name(request: Request, name: str, field: str) -> None:
    served_names = sorted(ctx_of(request).repositories)
    if name not in served_names:
        raise UsageError(f"{field}: '{name}' is not a served repository (served: "
                         f"{', '.join(served_names)}); nothing was started")


class VerifyBody(WorkBody):
    points: list[str] | None = Field(None, description="points to verify (all when none)")
    deep: bool = Field(False, description="read and check every chunk")
    repair_from: str | None = Field(None, description="a served repository to heal from")


@router.post("/verifications", openapi_extra=MAINTAIN, status_code=202,
             response_model=JobStarted, responses=STARTED)
def post_verification(body: VerifyBody, request: Request,
                      repository: str | None = REPOSITORY_QUERY,
                      where: Scope = Depends(scope)) -> JSONResponse:
    """Verify points (quick, or ``deep``), as a job."""
    if body.repair_from is not None:
        _served_name(request, body.repair_from, "repair_from")
    return start(request, where, body, "verify", given(body, "points", "deep", "repair_from"),
                 repository)


PRUNE_ANSWERS: dict[int | str, dict[str, Any]] = {
    **STARTED, 200: {"description": "dry_run: the decisions, nothing deleted"}}


class PruneBody(WorkBody):
    keep: dict[str, int] = Field(default_factory=dict,
                                 description="a count per rule: last, hourly, daily, weekly, "
                                             "monthly, yearly")
    within: str | None = None
    min_age: str | None = None
    timezone: str | None = None
    policy: str | None = Field(None, description="prune by this policy's retention")
    name: str | None = None
    vm: str | None = None
    dry_run: bool = Field(False, description="answer the decisions now, deleting nothing")


@router.post("/prunes", openapi_extra=MAINTAIN, status_code=202,
             response_model=JobStarted | PruneReport,
             responses=PRUNE_ANSWERS)
def post_prune(body: PruneBody, request: Request, repository: str | None = REPOSITORY_QUERY,
               where: Scope = Depends(scope)) -> JSONResponse:
    """Prune by retention rules or a policy: a job, or with ``dry_run`` the decisions
    at once."""
    from stasis.app.start import prune_now

    params = given(body, "within", "min_age", "timezone", "policy", "name", "vm") | {
        "keep": dict(body.keep)}
    if body.dry_run:
        ctx = ctx_of(request)
        report = prune_now(ctx.catalog, where, params, repo=served(ctx, body, repository),
                           connect=ctx.connect)
        return JSONResponse(report.to_json())
    return start(request, where, body, "prune", params, repository)


class GcBody(WorkBody):
    dry_run: bool = False
    wait: float | None = Field(None, ge=0, description="seconds to wait for a lock holder")


@router.post("/gc", openapi_extra=MAINTAIN, status_code=202, response_model=JobStarted,
             responses=STARTED)
def post_gc(request: Request, body: GcBody | None = None,
            repository: str | None = REPOSITORY_QUERY,
            where: Scope = Depends(scope)) -> JSONResponse:
    """Collect the garbage of a repository, as a job."""
    body = body or GcBody.model_validate({})
    return start(request, where, body, "gc", given(body, "dry_run", "wait"), repository)


class CopyBody(WorkBody):
    to: str = Field(description="the served repository to copy to")
    points: list[str] | None = None
    name: str | None = None
    vm: str | None = None
    all: bool = False
    policy: str | None = None
    dry_run: bool = False
    limit_rate: int | None = Field(None, gt=0, description="bytes sent a second")


@router.post("/copies", openapi_extra=MAINTAIN, status_code=202, response_model=JobStarted,
             responses=STARTED)
def post_copy(body: CopyBody, request: Request, repository: str | None = REPOSITORY_QUERY,
              where: Scope = Depends(scope)) -> JSONResponse:
    """Copy points to another served repository, as a job."""
    _served_name(request, body.to, "to")
    return start(request, where, body, "copy", given(
        body, "to", "points", "name", "vm", "all", "policy", "dry_run", "limit_rate"),
        repository)
