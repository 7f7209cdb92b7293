"""Instant recovery, exports, attached disks and clones (``stasis instant``, ``stasis
export``, ``stasis attach``/``detach``, ``stasis clone``), all needing ``restores:run``.

Each is served by a detached export (an nbdkit in a session of its own), so it
outlives the request that started it and the server process too; a request waits
only for it to be set up (a linked clone too: 201 with the clone). Finalizing an
instant VM and making a full clone copy whole disks: they are jobs (kinds
``instant.finalize`` and ``clone``, of the catalog's kind ``restore``), answered 202
with the job, followed and cancelled as any job. A cancelled finalize leaves the VM
running from the repository with no copy left; a cancelled clone leaves no domain
and no image.

Tenants act only on their own points and VMs and restore only where their tenant
allows (:func:`stasis.app.instant.check_targets`); what they start is recorded as
theirs (in its state file) and they see only that; anything else answers exactly as
a missing one (404).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stasis.api.context import ApiContext
from stasis.api.guard import GuardedRoute, needs, principal, scope
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.api.routes._work import REPOSITORY_QUERY, STARTED
from stasis.api.started import answer_started
from stasis.app import audit
from stasis.app import clone as clone_ops
from stasis.app import files as file_ops
from stasis.app import instant as ops
from stasis.app.auth import Principal
from stasis.app.instant import ExportOpener
from stasis.app.models import (
    Attached,
    CloneDeleted,
    CloneModel,
    CloneOwned,
    Detached,
    Discarded,
    InstantStarted,
    JobStarted,
    RunningOwned,
    ServedExport,
)
from stasis.app.scope import Scope
from stasis.errors import ExportError, InstantNotFound, UsageError
from stasis.repository import Credentials

router = APIRouter(route_class=GuardedRoute, tags=["instant"])
PERMISSION = "restores:run"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repository: str | None = Field(None, description="served repository (default: the "
                                                     "default one)")


class InstantRequest(_Body):
    point: str = Field(description="id, unique prefix or NAME@latest")
    vm: str | None = Field(None, description="VM of the point (if it has several)")
    name: str | None = Field(None, description="name of the new VM (default NAME-instant)")
    network: str | None = Field(None, description="connect every interface to this network")
    storage: str | None = Field(None, description="directory for the overlays")


class ExportRequest(_Body):
    point: str
    vm: str | None = None
    disk: str | None = None


class AttachRequest(_Body):
    point: str
    vm: str = Field(description="the VM of the point the disk belongs to")
    disk: str = Field(description="the disk of that VM")
    to: str = Field(description="the running VM to attach it to")
    target: str | None = Field(None, description="device name in the guest (vdb...)")


class CloneRequest(_Body):
    point: str = Field(description="the point to clone (id, unique prefix, NAME@latest)")
    name: str = Field(description="name of the new VM")
    vm: str | None = None
    linked: bool = Field(False, description="qcow2 overlays on an export of the point")
    storage: str | None = None
    network: str | None = None
    start: bool = False
    pool: str | None = Field(None, description="libvirt storage pool for a full clone's "
                                               "disks (instead of storage)")


class FinalizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool: str | None = Field(None, description="copy the disks to new volumes of this libvirt "
                                               "storage pool (default: the instant VM's "
                                               "storage directory)")


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def _credentials(ctx: ApiContext, name: str | None) -> Credentials:
    key = ctx.default_repository if name is None else name
    creds = ctx.credentials.get(key)
    if creds is None:
        raise ExportError(f"repository {key}", "the server holds no credentials to give "
                          "an export process")
    return creds


def _opener(ctx: ApiContext, name: str | None) -> ExportOpener:
    r = ctx.repository(name)
    creds = _credentials(ctx, name)
    return lambda: (r, creds)


def _tenant(who: Principal) -> str | None:
    return who.tenant.name if who.tenant is not None else None


def _check_owner(where: Scope, kind: str, key: str, missing: InstantNotFound) -> None:
    """Another tenant's instant VM, export or clone raises ``missing``, as a missing one."""
    if not where.everything and ops.owner_of(kind, key) != _tenant(where.principal):
        raise missing


def _own(row_tenant: str | None, where: Scope) -> bool:
    return where.everything or row_tenant == _tenant(where.principal)


# ------------------------------------------------------------------ instant VMs


@router.post("/instant", openapi_extra=needs(PERMISSION), response_model=InstantStarted,
             status_code=201)
def start_instant(request: Request, body: InstantRequest,
                  who: Principal = Depends(principal),
                  where: Scope = Depends(scope)) -> InstantStarted:
    """Define and start a VM whose disks are overlays on an export of a point; answers
    once it runs (its export serves on until finalize or discard)."""
    ctx = _ctx(request)
    r = ctx.repository(body.repository)
    m = file_ops.point_for(r, body.point, where)
    storage = Path(body.storage) if body.storage else None
    ops.check_targets(who.tenant, storage=storage, network=body.network)
    result = ops.start(ctx.connect, _opener(ctx, body.repository), m.id, vm=body.vm,
                       name=body.name, network=body.network, storage=storage)
    ops.set_owner("instant", result.name, tenant=_tenant(who), by=who.user)
    audit.record(ctx.catalog, who, "instant.start", f"vm:{result.name}",
                 detail={"point": m.id, "vm": result.vm})
    return result


@router.get("/instant", openapi_extra=needs(PERMISSION), response_model=Page[RunningOwned])
def list_instant(request: Request,
                 kind: str | None = Query(None, description="instant, clone or attach"),
                 q: ListQuery = Depends(list_query),
                 where: Scope = Depends(scope)) -> Page[RunningOwned]:
    """Instant VMs, linked clones and attached disks running from a repository."""
    rows = [r for r in ops.running_owned(_ctx(request).connect)
            if _own(r.tenant, where) and (kind is None or r.kind == kind)]
    return paginate(rows, q, sorts={"name": lambda r: r.name, "created": lambda r: r.created,
                                    "kind": lambda r: r.kind},
                    default="name", ident=lambda r: f"{r.kind}:{r.name}@{r.target or ''}")


def _missing_instant(name: str) -> InstantNotFound:
    return InstantNotFound(f"No instant VM named '{name}' was started here. 'stasis instant "
                           "list' shows them.")


@router.post("/instant/{name}/finalize", openapi_extra=needs(PERMISSION), status_code=202,
             response_model=JobStarted, responses=STARTED)
def finalize_instant(request: Request, name: str, body: FinalizeRequest | None = None,
                     repository: str | None = REPOSITORY_QUERY,
                     who: Principal = Depends(principal),
                     where: Scope = Depends(scope)) -> JSONResponse:
    """Copy the instant VM's disks to local storage while it runs, then stop its export:
    a job (202 with it; 200 with the finalize of this VM already queued or running).
    Cancelled before its disks pivot, the VM runs on from the repository, no copy
    left. The repository is the one the VM runs from (``repository`` names it when the
    server serves it under several names)."""
    from stasis.app.start import start_job

    ctx = _ctx(request)
    missing = _missing_instant(name)
    _check_owner(where, "instant", name, missing)
    try:
        location = ops.instant_repository(name)
    except InstantNotFound:
        raise missing from None
    if repository is None:
        repository = next((n for n, r in ctx.repositories.items() if r.url == location),
                          None)
    repo = ctx.repository(repository)
    params: dict[str, str] = {"name": name}
    if body is not None and body.pool is not None:
        params["pool"] = body.pool
    return answer_started(request, who, None, lambda: start_job(
        ctx.catalog, where, "instant.finalize", params, repo=repo, wake=ctx.wake))


@router.post("/instant/{name}/discard", openapi_extra=needs(PERMISSION),
             response_model=Discarded)
def discard_instant(request: Request, name: str, who: Principal = Depends(principal),
                    where: Scope = Depends(scope)) -> Discarded:
    """Stop and undefine the instant VM, stop its export, remove its overlays."""
    ctx = _ctx(request)
    _check_owner(where, "instant", name, _missing_instant(name))
    result = ops.discard(ctx.connect, name)
    audit.record(ctx.catalog, who, "instant.discard", f"vm:{name}",
                 detail={"removed": result.removed})
    return result


# ------------------------------------------------------------------ exports


@router.post("/exports", openapi_extra=needs(PERMISSION), response_model=ServedExport,
             status_code=201)
def start_export(request: Request, body: ExportRequest, who: Principal = Depends(principal),
                 where: Scope = Depends(scope)) -> ServedExport:
    """Serve a disk of a point read-only over NBD on a unix socket of the host, until
    ``DELETE /exports/{id}``."""
    ctx = _ctx(request)
    r = ctx.repository(body.repository)
    m = file_ops.point_for(r, body.point, where)
    served = ops.serve_disk(_opener(ctx, body.repository), m.id, vm=body.vm, disk=body.disk)
    ops.set_owner("export", served.id, tenant=_tenant(who), by=who.user)
    audit.record(ctx.catalog, who, "export.start", f"export:{served.id}",
                 detail={"point": m.id, "vm": served.vm, "disk": served.disk})
    return served.model_copy(update={"tenant": _tenant(who), "by": who.user})


@router.get("/exports", openapi_extra=needs(PERMISSION), response_model=Page[ServedExport])
def list_exports(q: ListQuery = Depends(list_query),
                 where: Scope = Depends(scope)) -> Page[ServedExport]:
    """The disks the server serves over NBD."""
    rows = [e for e in ops.served() if _own(e.tenant, where)]
    return paginate(rows, q, sorts={"created": lambda e: e.created, "vm": lambda e: e.vm},
                    default="created", ident=lambda e: e.id)


@router.delete("/exports/{export_id}", openapi_extra=needs(PERMISSION),
               response_model=ServedExport)
def stop_export(request: Request, export_id: str, who: Principal = Depends(principal),
                where: Scope = Depends(scope)) -> ServedExport:
    """Stop serving a disk."""
    missing = InstantNotFound(f"No export '{export_id}' is served here. GET /api/v1/exports "
                              "lists them.")
    _check_owner(where, "export", export_id, missing)
    result = ops.stop_served(export_id)
    audit.record(_ctx(request).catalog, who, "export.stop", f"export:{export_id}")
    return result


# ------------------------------------------------------------------ attached disks


@router.post("/attachments", openapi_extra=needs(PERMISSION), response_model=Attached,
             status_code=201)
def attach(request: Request, body: AttachRequest, who: Principal = Depends(principal),
           where: Scope = Depends(scope)) -> Attached:
    """Attach a disk of a point read-only to a running VM, through an export."""
    ctx = _ctx(request)
    r = ctx.repository(body.repository)
    m = file_ops.point_for(r, body.point, where)
    where.check_vm(body.to, "on this host")
    result = ops.attach(ctx.connect, _opener(ctx, body.repository), m.id, vm=body.vm,
                        disk=body.disk, to=body.to, target=body.target)
    ops.set_owner("attach", f"{result.vm}@{result.target}", tenant=_tenant(who), by=who.user)
    audit.record(ctx.catalog, who, "attach", f"vm:{result.vm}",
                 detail={"point": m.id, "disk": f"{result.source_vm}/{result.disk}",
                         "target": result.target})
    return result


@router.delete("/attachments/{vm}/{target}", openapi_extra=needs(PERMISSION),
               response_model=Detached)
def detach(request: Request, vm: str, target: str, who: Principal = Depends(principal),
           where: Scope = Depends(scope)) -> Detached:
    """Detach a disk attached from a point and stop its export."""
    ctx = _ctx(request)
    missing = InstantNotFound(f"No disk from a point is attached to {vm} as {target}. GET "
                              "/api/v1/instant?kind=attach lists them.")
    _check_owner(where, "attach", f"{vm}@{target}", missing)
    result = ops.detach(ctx.connect, vm, target)
    audit.record(ctx.catalog, who, "detach", f"vm:{vm}", detail={"target": target})
    return result


# ------------------------------------------------------------------ clones


@router.post("/clones", openapi_extra=needs(PERMISSION), response_model=JobStarted,
             status_code=202, responses={
                 **STARTED, 201: {"model": CloneModel,
                                  "description": "The linked clone, made"}})
def make_clone(request: Request, body: CloneRequest, who: Principal = Depends(principal),
               where: Scope = Depends(scope)) -> JSONResponse:
    """Make a new VM, with a new name, UUID and MACs, from a point: a full sparse copy
    as a job (202 with the job; cancelled, it leaves no domain and no image), or
    ``linked`` (overlays on an export; the point is held while it lives), made in the
    request (201 with the clone)."""
    from stasis.app.start import start_job

    ctx = _ctx(request)
    r = ctx.repository(body.repository)
    m = file_ops.point_for(r, body.point, where)
    storage = Path(body.storage) if body.storage else None
    if body.pool is not None and (body.storage is not None or body.linked):
        raise UsageError("pool: a full clone's disks go to a pool or to storage, not both; "
                         "a linked clone's overlays go to storage. Nothing was made.")
    ops.check_targets(who.tenant, storage=storage, network=body.network, pool=body.pool)
    if not where.everything and body.name not in (who.tenant.vms if who.tenant else ()):
        # The clone must be the tenant's once made: by its name (labels are not copied).
        raise UsageError(f"tenant {_tenant(who)} owns VMs by name or label; a clone named "
                         f"{body.name!r} would not be its own. Nothing was made.")
    if not body.linked:
        params = {k: v for k, v in {"point": m.id, "name": body.name, "vm": body.vm,
                                    "storage": body.storage, "network": body.network,
                                    "start": body.start, "pool": body.pool}.items()
                  if v is not None}
        clone_ops.refuse_full_clone(ctx.connect, r, m.id, name=body.name, vm=body.vm,
                                    storage=storage, network=body.network, pool=body.pool)
        return answer_started(request, who, body, lambda: start_job(
            ctx.catalog, where, "clone", params, repo=r, wake=ctx.wake))
    result = clone_ops.clone(ctx.connect, _opener(ctx, body.repository), m.id,
                             name=body.name, vm=body.vm, linked=True, storage=storage,
                             network=body.network, start=body.start)
    ops.set_owner("clone", result.name, tenant=_tenant(who), by=who.user)
    audit.record(ctx.catalog, who, "clone.make", f"vm:{result.name}",
                 detail={"point": m.id, "linked": result.linked})
    return JSONResponse(result.model_dump(mode="json"), status_code=201)


@router.get("/clones", openapi_extra=needs(PERMISSION), response_model=Page[CloneOwned])
def list_clones(request: Request, q: ListQuery = Depends(list_query),
                where: Scope = Depends(scope)) -> Page[CloneOwned]:
    """Linked clones, with their point and export."""
    owners = ops.owners("clone")
    rows = [CloneOwned.model_validate({**c.model_dump(), "tenant": owners.get(c.name)})
            for c in clone_ops.list_clones(_ctx(request).connect)]
    rows = [c for c in rows if _own(c.tenant, where)]
    return paginate(rows, q, sorts={"name": lambda c: c.name, "created": lambda c: c.created},
                    default="name", ident=lambda c: c.name)


@router.delete("/clones/{name}", openapi_extra=needs(PERMISSION),
               response_model=CloneDeleted)
def delete_clone(request: Request, name: str, who: Principal = Depends(principal),
                 where: Scope = Depends(scope)) -> CloneDeleted:
    """Stop and undefine a linked clone, stop its export, remove its overlays; its
    point's hold is released with the point's last clone."""
    ctx = _ctx(request)
    missing = InstantNotFound(f"No linked clone named '{name}' was made here. 'stasis clone "
                              "list' shows them.")
    _check_owner(where, "clone", name, missing)
    result = clone_ops.delete_clone(ctx.connect, name, _credentials(ctx, None))
    audit.record(ctx.catalog, who, "clone.delete", f"vm:{name}")
    return result
