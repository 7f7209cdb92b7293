"""``/vms``: the libvirt VMs, their protection, and their labels."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict

from stasis.api.guard import GuardedRoute, needs, principal, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes.common import context, label_filter
from stasis.app import audit
from stasis.app.auth import Principal
from stasis.app.groups import vm_labels
from stasis.app.inventory import find_vms
from stasis.app.models import VmLabels, VmRow
from stasis.app.scope import Scope
from stasis.app.tenants import check_label_change
from stasis.errors import VmNotFound

router = APIRouter(route_class=GuardedRoute, tags=["vms"])

State = Literal["running", "blocked", "paused", "shutting down", "shut off", "crashed",
                "suspended", "no state", "unknown"]
SORTS = {"name": lambda r: r.name, "state": lambda r: r.state}


class LabelsPatch(BaseModel):
    """Labels to set (KEY: VALUE) and to remove (KEY); the others stay."""

    model_config = ConfigDict(extra="forbid")

    set: dict[str, str] = {}
    remove: list[str] = []


class LabelsPut(BaseModel):
    """Every label of the VM: those not named are removed."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[str, str]


@router.get("/vms", openapi_extra=needs("vms:read"), response_model=Page[VmRow])
def list_vms(request: Request, where: Scope = Depends(scope),
             q: ListQuery = Depends(list_query),
             state: State | None = Query(None, description="only VMs in this state"),
             protected: bool | None = Query(None, description="only VMs with (or without) "
                                            "a point or checkpoint chain in the default "
                                            "repository"),
             label: list[str] = Query([], description="KEY=VALUE: only VMs carrying it "
                                      "(repeat for several)"),
             name: str | None = Query(None, description="a name glob (web*)"),
             ) -> Page[VmRow]:
    """The VMs (a tenant's only, for a tenant), with their disks and protection."""
    ctx = context(request)
    labels = label_filter(label)
    rows = find_vms(ctx.libvirt(), ctx.repository(), name=name, labels=labels,
                    state=state, protected=protected,
                    owned=None if where.everything else where.owns_vm)
    return paginate(rows, q, sorts=SORTS, default="name", ident=lambda r: r.name)


@router.get("/vms/{name}", openapi_extra=needs("vms:read"), response_model=VmRow)
def get_vm(request: Request, name: str = Path(), where: Scope = Depends(scope)) -> VmRow:
    ctx = context(request)
    where.check_vm(name, ctx.connect)
    rows = [r for r in find_vms(ctx.libvirt(), ctx.repository(),
                                owned=lambda vm: vm == name)]
    if not rows:
        raise VmNotFound(name, ctx.connect)
    return rows[0]


@router.get("/vms/{name}/labels", openapi_extra=needs("vms:read"), response_model=VmLabels)
def get_labels(request: Request, name: str = Path(), where: Scope = Depends(scope)
               ) -> VmLabels:
    ctx = context(request)
    where.check_vm(name, ctx.connect)
    return vm_labels(ctx.connect, name)


@router.put("/vms/{name}/labels", openapi_extra=needs("vms:write"), response_model=VmLabels)
def put_labels(request: Request, body: LabelsPut, name: str = Path(),
               who: Principal = Depends(principal), where: Scope = Depends(scope)
               ) -> VmLabels:
    """Set the VM's labels to exactly these."""
    ctx = context(request)
    where.check_vm(name, ctx.connect)
    now = vm_labels(ctx.connect, name)
    check_label_change(ctx.catalog, who, name, now.labels, body.labels)
    done = vm_labels(ctx.connect, name, assignments=[f"{k}={v}" for k, v in body.labels.items()],
                     remove=[k for k in now.labels if k not in body.labels])
    audit.record(ctx.catalog, who, "vm.labels", f"vm:{name}", detail={"labels": done.labels})
    return done


@router.patch("/vms/{name}/labels", openapi_extra=needs("vms:write"),
              response_model=VmLabels)
def patch_labels(request: Request, body: LabelsPatch = Body(), name: str = Path(),
                 who: Principal = Depends(principal), where: Scope = Depends(scope)
                 ) -> VmLabels:
    """Set some labels and remove others (as ``stasis label``)."""
    ctx = context(request)
    where.check_vm(name, ctx.connect)
    now = vm_labels(ctx.connect, name).labels
    after = {k: v for k, v in (now | body.set).items() if k not in body.remove}
    check_label_change(ctx.catalog, who, name, now, after)
    done = vm_labels(ctx.connect, name, assignments=[f"{k}={v}" for k, v in body.set.items()],
                     remove=body.remove)
    audit.record(ctx.catalog, who, "vm.labels", f"vm:{name}", detail={"labels": done.labels})
    return done
