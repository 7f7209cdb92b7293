"""``/restores``: restore a VM (as new, or in place), a disk to a path, or a group's
VMs — as a job. A tenant restores only its own points, to the places it is allowed
(see :mod:`stasis.app.start`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from stasis.api.guard import GuardedRoute, needs, scope
from stasis.api.routes._work import REPOSITORY_QUERY, STARTED, WorkBody, given, start
from stasis.app.models import JobStarted
from stasis.app.scope import Scope
from stasis.errors import UsageError

router = APIRouter(route_class=GuardedRoute, tags=["restores"])


class RestoreBody(WorkBody):
    """``what``: ``vm`` (as a new VM, or ``in_place`` over the VM, which must be shut
    off), ``disk`` (one disk to the path ``to``), or ``group`` (every VM of the point,
    named with ``suffix``)."""

    what: Literal["vm", "disk", "group"] = "vm"
    point: str = Field(description="a point id, a unique prefix, or NAME@latest")
    vm: str | None = Field(None, description="the VM of the point (when it holds several)")
    name: str | None = Field(None, description="the new VM's name (vm)")
    storage: Path | None = Field(None, description="where the new disks go (vm, group); "
                                                   "made when missing")
    pool: str | None = Field(None, description="the libvirt storage pool whose new volumes "
                                               "take the disks (vm, group, disk; instead "
                                               "of storage or to)")
    network: str | None = Field(None, description="the network to attach (vm, group)")
    start: bool = False
    in_place: bool = False
    disk: str | None = Field(None, description="the disk (disk)")
    to: Path | None = Field(None, description="the image to write (disk); with pool, the "
                                              "new volume's name")
    format: str | None = Field(None, description="the image's format (disk)")
    force: bool = Field(False, description="overwrite ``to`` (disk)")
    suffix: str | None = Field(None, description="added to each VM's name (group)")
    order: list[str] | None = Field(None, description="the VMs' start order (group)")


_FIELDS = {
    "vm": ("point", "vm", "name", "storage", "network", "start", "in_place", "pool"),
    "disk": ("point", "vm", "disk", "to", "format", "force", "pool"),
    "group": ("point", "suffix", "storage", "network", "start", "order", "pool"),
}


@router.post("/restores", openapi_extra=needs("restores:run"), status_code=202,
             response_model=JobStarted, responses=STARTED)
def post_restore(body: RestoreBody, request: Request,
                 repository: str | None = REPOSITORY_QUERY,
                 where: Scope = Depends(scope)) -> JSONResponse:
    """Start a restore as a job (202 with the job)."""
    fields = _FIELDS[body.what]
    unused = sorted(f for f in body.model_fields_set - set(fields)
                    - {"what", "repository"} if getattr(body, f) not in (None, False))
    if unused:
        raise UsageError(f"a restore of a {body.what} takes no {', '.join(unused)}; "
                         "nothing was restored")
    if body.what == "disk" and body.to is None and body.pool is None:
        raise UsageError("to: a disk restore needs the path of the image to write (or a "
                         "pool); nothing was restored")
    if body.what == "group" and not body.suffix:
        raise UsageError("suffix: a group restore names its VMs with a suffix; nothing "
                         "was restored")
    params = given(body, *fields)
    return start(request, where, body, f"restore.{body.what}", params, repository)
