"""``/points``: the recovery points of a served repository (``?repository=NAME``),
shown (a listing gives each point's VMs and how each disk was read, so a timeline
needs no request per point), held and released (and the hold read), and deleted."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from stasis.api.guard import GuardedRoute, needs, principal, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes.common import context, repository
from stasis.app import audit
from stasis.app import points as ops
from stasis.app import prune as holds
from stasis.app.auth import Principal
from stasis.app.models import (
    HoldRow,
    PointDeleted,
    PointDetail,
    PointHold,
    PointSummary,
    Released,
)
from stasis.app.scope import Scope
from stasis.repository import Repository

router = APIRouter(route_class=GuardedRoute, tags=["points"])

SORTS = {"time": lambda p: p.time, "size": lambda p: p.size, "name": lambda p: p.name}
PointPath = Path(description="an id, a unique id prefix, or NAME@latest")


class HoldBody(BaseModel):
    """Keep a point past retention, until released or until ``until``."""

    model_config = ConfigDict(extra="forbid")

    reason: str = ""
    until: str | None = Field(None, description="a date (held through it), a date-time "
                                                "or a span (90d); none: until released")
    timezone: str = Field("UTC", description="the zone a date or date-time is in")


def _owned(where: Scope) -> ops.Owned | None:
    return None if where.everything else where.owns_vms


@router.get("/points", openapi_extra=needs("points:read"), response_model=Page[PointSummary])
def list_points(where: Scope = Depends(scope), q: ListQuery = Depends(list_query),
                repo: Repository = Depends(repository),
                vm: str | None = Query(None, description="only points holding this VM"),
                name: str | None = Query(None, description="only points of this name "
                                         "(a group's or VM's chain; a glob)"),
                kind: str | None = Query(None, description="vm, group or image"),
                since: datetime | None = Query(None, description="taken at or after"),
                until: datetime | None = Query(None, description="taken at or before"),
                held: bool | None = Query(None, description="only held (or not held) "
                                          "points"),
                ) -> Page[PointSummary]:
    """The points (for a tenant: those whose VMs are all its own), oldest first."""
    rows = ops.find_points(repo, vm=vm, name=name, kind=kind, since=since, until=until,
                           held=held, owned=_owned(where))
    return paginate(rows, q, sorts=SORTS, default="time", ident=lambda p: p.id)


@router.get("/points/{point}", openapi_extra=needs("points:read"),
            response_model=PointDetail, response_model_exclude_unset=True)
def get_point(point: str = PointPath, where: Scope = Depends(scope),
              repo: Repository = Depends(repository)) -> PointDetail:
    """One point in full, as its manifest holds it."""
    return ops.show_point(repo, point, owned=_owned(where))


@router.get("/points/{point}/hold", openapi_extra=needs("points:read"),
            response_model=PointHold)
def get_hold(point: str = PointPath, where: Scope = Depends(scope),
             repo: Repository = Depends(repository)) -> PointHold:
    """Whether the point is held, and its hold: reason, until, by whom, since when."""
    m = ops.resolve_point(repo, point, owned=_owned(where))
    return holds.hold_of(lambda: repo, m.id)


@router.post("/points/{point}/hold", openapi_extra=needs("points:hold"),
             response_model=HoldRow)
def hold_point(request: Request, body: HoldBody, point: str = PointPath,
               who: Principal = Depends(principal), where: Scope = Depends(scope),
               repo: Repository = Depends(repository)) -> HoldRow:
    """Hold a point: prune never removes it while the hold lasts."""
    m = ops.resolve_point(repo, point, owned=_owned(where))
    row = holds.hold(lambda: repo, m.id, until=body.until, reason=body.reason,
                     timezone=body.timezone, by=who.shown)
    audit.record(context(request).catalog, who, "point.hold", f"point:{m.id}",
                 detail={"until": row.until, "reason": row.reason})
    return row


@router.delete("/points/{point}/hold", openapi_extra=needs("points:hold"),
               response_model=Released)
def release_point(request: Request, point: str = PointPath,
                  who: Principal = Depends(principal), where: Scope = Depends(scope),
                  repo: Repository = Depends(repository)) -> Released:
    """Lift a point's hold: retention decides about it again."""
    m = ops.resolve_point(repo, point, owned=_owned(where))
    done = holds.release(lambda: repo, m.id)
    audit.record(context(request).catalog, who, "point.release", f"point:{m.id}",
                 detail={"released": done.released})
    return done


@router.delete("/points/{point}", openapi_extra=needs("points:delete"),
               response_model=PointDeleted)
def delete_point(request: Request, point: str = PointPath,
                 who: Principal = Depends(principal), where: Scope = Depends(scope),
                 repo: Repository = Depends(repository)) -> PointDeleted:
    """Delete a point (409 while it is held); its chunks stay until gc."""
    ctx = context(request)
    try:
        gone = ops.delete_point(repo, point, owned=_owned(where))
    except Exception as e:
        audit.record(ctx.catalog, who, "point.delete", f"point:{point}", result="failed",
                     detail={"error": type(e).__name__})
        raise
    audit.record(ctx.catalog, who, "point.delete", f"point:{gone.id}",
                 detail={"name": gone.name, "time": gone.time})
    return gone
