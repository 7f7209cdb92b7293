"""``/backups``: back up VMs, a group, a policy now, or host images — as a job."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from stasis.api.guard import GuardedRoute, needs, scope
from stasis.api.routes._work import REPOSITORY_QUERY, STARTED, WorkBody, given, start
from stasis.app.models import JobStarted
from stasis.app.scope import Scope
from stasis.errors import UsageError

router = APIRouter(route_class=GuardedRoute, tags=["backups"])


class BackupBody(WorkBody):
    """What to back up: ``vms``, a ``group`` (``vms`` then adds members), a ``policy``
    (run now, as ``stasis policy run``) or host ``images`` (the system's only)."""

    vms: list[str] | None = Field(None, min_length=1)
    group: str | None = None
    policy: str | None = None
    images: list[Path] | None = Field(None, min_length=1)
    name: str | None = Field(None, description="the point's name (images)")
    format: str | None = Field(None, description="the images' format (images)")
    tags: dict[str, str] | None = None
    parallel: int | None = Field(None, ge=1, description="VMs backed up at once (vms)")
    consistency: str | None = Field(None, description="crash, filesystem or application")
    require: str | None = Field(None, description="the lowest consistency accepted")


@router.post("/backups", openapi_extra=needs("backups:run"), status_code=202,
             response_model=JobStarted, responses=STARTED)
def post_backup(body: BackupBody, request: Request, repository: str | None = REPOSITORY_QUERY,
                where: Scope = Depends(scope)) -> JSONResponse:
    """Start a backup as a job (202 with the job; 200 with the job of the same backup
    already queued or running)."""
    chosen = [f for f in ("group", "policy", "images") if getattr(body, f) is not None]
    if len(chosen) > 1 or (not chosen and body.vms is None):
        raise UsageError("say what to back up: vms, a group (with vms as extra members), "
                         "a policy or images (one of them); nothing was started")
    what = chosen[0] if chosen else "vms"
    if what == "policy":
        if body.vms is not None or body.tags or body.consistency or body.require:
            raise UsageError("a policy brings its own VMs, consistency and tags: give only "
                             "its name; nothing was started")
        return start(request, where, body, "policy", {"policy": body.policy}, repository)
    if what == "images":
        params = given(body, "name", "format", "tags") | {"paths": given(body, "images")
                                                          ["images"]}
        return start(request, where, body, "backup.images", params, repository)
    if what == "group":
        return start(request, where, body, "backup.group", given(
            body, "group", "vms", "consistency", "require", "tags"), repository)
    return start(request, where, body, "backup.vms", given(
        body, "vms", "tags", "parallel", "consistency", "require"), repository)
