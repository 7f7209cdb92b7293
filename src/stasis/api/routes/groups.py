"""``/groups``: stored groups, with the same checks as ``stasis group``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from stasis.api.guard import GuardedRoute, needs, principal, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes.common import context
from stasis.app import audit
from stasis.app import groups as ops
from stasis.app.auth import Principal
from stasis.app.models import GroupDeleted, GroupModel
from stasis.app.scope import Scope

router = APIRouter(route_class=GuardedRoute, tags=["groups"])

SORTS = {"name": lambda g: g.name, "updated": lambda g: g.updated}


class Hooks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pre_host: list[str] = []
    post_host: list[str] = []
    pre_guest: list[str] = Field(default_factory=list, description="VM:COMMAND")
    post_guest: list[str] = Field(default_factory=list, description="VM:COMMAND")
    timeout: float | None = Field(default=None, description="seconds")


class GroupCreate(BaseModel):
    """A new group: members by name and/or selectors (name globs, labels)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    vms: list[str] = []
    select: list[str] = Field(default_factory=list, description="name globs")
    labels: dict[str, str] = {}
    consistency: str = "crash"
    require: str | None = None
    hooks: Hooks = Field(default_factory=Hooks)
    description: str | None = None


class GroupPatch(BaseModel):
    """What to change (as ``stasis group edit``'s options); what is not given stays."""

    model_config = ConfigDict(extra="forbid")

    add_vms: list[str] = []
    remove_vms: list[str] = []
    add_select: list[str] = []
    remove_select: list[str] = []
    add_labels: dict[str, str] = {}
    remove_labels: list[str] = []
    consistency: str | None = None
    require: str | None = None
    no_require: bool = False
    pre_host: list[str] = []
    post_host: list[str] = []
    pre_guest: list[str] = []
    post_guest: list[str] = []
    clear_hooks: bool = False
    hook_timeout: float | None = None
    description: str | None = None


@router.get("/groups", openapi_extra=needs("groups:read"), response_model=Page[GroupModel])
def list_groups(request: Request, where: Scope = Depends(scope),
                q: ListQuery = Depends(list_query)) -> Page[GroupModel]:
    """The groups (a tenant's own, for a tenant), with what each resolves to now."""
    ctx = context(request)
    rows = ops.list_groups(ctx.catalog, connect=ctx.connect, scope=where)
    return paginate(rows, q, sorts=SORTS, default="name", ident=lambda g: g.name)


@router.get("/groups/{name}", openapi_extra=needs("groups:read"), response_model=GroupModel)
def get_group(request: Request, name: str = Path(), where: Scope = Depends(scope)
              ) -> GroupModel:
    ctx = context(request)
    return ops.show_group(ctx.catalog, name, connect=ctx.connect, scope=where)


@router.post("/groups", openapi_extra=needs("groups:write"), response_model=GroupModel,
             status_code=201)
def create_group(request: Request, body: GroupCreate, who: Principal = Depends(principal),
                 where: Scope = Depends(scope)) -> GroupModel:
    """Store a group (a tenant's own, of its own VMs, for a tenant)."""
    ctx = context(request)
    made = ops.create_group(
        ctx.catalog, body.name, connect=ctx.connect, vms=body.vms, select=body.select,
        labels=[f"{k}={v}" for k, v in body.labels.items()], consistency=body.consistency,
        require=body.require, pre_host=body.hooks.pre_host, post_host=body.hooks.post_host,
        pre_guest=body.hooks.pre_guest, post_guest=body.hooks.post_guest,
        hook_timeout=body.hooks.timeout, description=body.description, scope=where)
    audit.record(ctx.catalog, who, "group.create", f"group:{made.name}")
    return made


@router.patch("/groups/{name}", openapi_extra=needs("groups:write"),
              response_model=GroupModel)
def patch_group(request: Request, body: GroupPatch, name: str = Path(),
                who: Principal = Depends(principal), where: Scope = Depends(scope)
                ) -> GroupModel:
    """Change a group; everything asked is checked first, a refused part changes nothing."""
    ctx = context(request)
    fields = body.model_dump()
    fields["add_labels"] = [f"{k}={v}" for k, v in body.add_labels.items()]
    changed = ops.edit_group(ctx.catalog, name, ops.GroupChange(**fields),
                             connect=ctx.connect, scope=where)
    audit.record(ctx.catalog, who, "group.edit", f"group:{name}",
                 detail=body.model_dump(exclude_defaults=True))
    return changed


@router.delete("/groups/{name}", openapi_extra=needs("groups:write"),
               response_model=GroupDeleted)
def delete_group(request: Request, name: str = Path(), who: Principal = Depends(principal),
                 where: Scope = Depends(scope)) -> GroupDeleted:
    """Delete a group (its points stay); answer what it was."""
    ctx = context(request)
    gone = ops.delete_group(ctx.catalog, name, scope=where)
    audit.record(ctx.catalog, who, "group.delete", f"group:{name}")
    return gone
