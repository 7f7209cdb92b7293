"""``/users``, ``/tenants`` and ``/roles``: administering accounts (``users:admin``,
over the whole system)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from stasis.api.guard import GuardedRoute, needs, principal
from stasis.api.listing import ListQuery, Page, list_query, paginate
from stasis.app import accounts
from stasis.app.auth import Principal
from stasis.app.models import AccountRemoved, RoleModel, TenantModel, UserModel
from stasis.catalog import Catalog

router = APIRouter(route_class=GuardedRoute, tags=["accounts"])
ADMIN = needs("users:admin")


def _catalog(request: Request, who: Principal) -> Catalog:
    accounts.require_admin(who)
    catalog: Catalog = request.app.state.ctx.catalog
    return catalog


# ------------------------------------------------------------------ users


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: str
    tenant: str | None = Field(None, description="bound to this tenant (None: the whole "
                                                 "system)")
    password: str = Field(min_length=8, max_length=1024)


class UserChange(BaseModel):
    role: str | None = None
    tenant: str | None = Field(None, description="a tenant, or null for the whole system "
                                                 "(left as it is when absent)")
    disabled: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)


@router.get("/users", openapi_extra=ADMIN, response_model=Page[UserModel])
def list_users(request: Request, q: ListQuery = Depends(list_query),
               who: Principal = Depends(principal)) -> Page[UserModel]:
    users = accounts.list_users(_catalog(request, who))
    return paginate(users, q, sorts={"name": lambda u: u.name, "role": lambda u: u.role,
                                     "created": lambda u: u.created,
                                     "last_login": lambda u: u.last_login},
                    default="name", ident=lambda u: u.name)


@router.post("/users", openapi_extra=ADMIN, response_model=UserModel, status_code=201)
def add_user(body: NewUser, request: Request,
             who: Principal = Depends(principal)) -> UserModel:
    return accounts.add_user(_catalog(request, who), body.name, role=body.role,
                             tenant=body.tenant, password=body.password.encode(), who=who)


@router.get("/users/{name}", openapi_extra=ADMIN, response_model=UserModel)
def show_user(name: str, request: Request, who: Principal = Depends(principal)) -> UserModel:
    return accounts.show_user(_catalog(request, who), name)


@router.patch("/users/{name}", openapi_extra=ADMIN, response_model=UserModel)
def edit_user(name: str, body: UserChange, request: Request,
              who: Principal = Depends(principal)) -> UserModel:
    """Change a user's role, tenant, disabled state or password (a disabled user's
    sessions end and its tokens stop working)."""
    catalog = _catalog(request, who)
    if "tenant" in body.model_fields_set:
        return accounts.edit_user(catalog, name, role=body.role, tenant=body.tenant,
                                  disabled=body.disabled, who=who,
                                  password=None if body.password is None
                                  else body.password.encode())
    return accounts.edit_user(catalog, name, role=body.role, disabled=body.disabled, who=who,
                              password=None if body.password is None
                              else body.password.encode())


@router.delete("/users/{name}", openapi_extra=ADMIN, response_model=AccountRemoved)
def remove_user(name: str, request: Request,
                who: Principal = Depends(principal)) -> AccountRemoved:
    return accounts.remove_user(_catalog(request, who), name, who=who)


# ------------------------------------------------------------------ tenants


class NewTenant(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    vms: list[str] = Field(default_factory=list, description="VM names it owns")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="and the VMs carrying all of these labels")
    restore_pools: list[str] = Field(default_factory=list)
    restore_networks: list[str] = Field(default_factory=list)
    restore_dirs: list[str] = Field(default_factory=list)


class TenantChange(BaseModel):
    add_vms: list[str] | None = None
    remove_vms: list[str] | None = None
    labels: dict[str, str] | None = Field(None, description="replaces the selector")
    restore_pools: list[str] | None = Field(None, description="replaces the list")
    restore_networks: list[str] | None = Field(None, description="replaces the list")
    restore_dirs: list[str] | None = Field(None, description="replaces the list")
    description: str | None = None


@router.get("/tenants", openapi_extra=ADMIN, response_model=Page[TenantModel])
def list_tenants(request: Request, q: ListQuery = Depends(list_query),
                 who: Principal = Depends(principal)) -> Page[TenantModel]:
    tenants = accounts.list_tenants(_catalog(request, who))
    return paginate(tenants, q, sorts={"name": lambda t: t.name,
                                       "created": lambda t: t.created},
                    default="name", ident=lambda t: t.name)


@router.post("/tenants", openapi_extra=ADMIN, response_model=TenantModel, status_code=201)
def add_tenant(body: NewTenant, request: Request,
               who: Principal = Depends(principal)) -> TenantModel:
    return accounts.add_tenant(_catalog(request, who), body.name, vms=body.vms,
                               labels=body.labels, restore_pools=body.restore_pools,
                               restore_networks=body.restore_networks,
                               restore_dirs=body.restore_dirs, description=body.description,
                               who=who)


@router.get("/tenants/{name}", openapi_extra=ADMIN, response_model=TenantModel)
def show_tenant(name: str, request: Request,
                who: Principal = Depends(principal)) -> TenantModel:
    return accounts.show_tenant(_catalog(request, who), name)


@router.patch("/tenants/{name}", openapi_extra=ADMIN, response_model=TenantModel)
def edit_tenant(name: str, body: TenantChange, request: Request,
                who: Principal = Depends(principal)) -> TenantModel:
    return accounts.edit_tenant(_catalog(request, who), name,
                                accounts.TenantChange(**body.model_dump()), who=who)


@router.delete("/tenants/{name}", openapi_extra=ADMIN, response_model=AccountRemoved)
def remove_tenant(name: str, request: Request,
                  who: Principal = Depends(principal)) -> AccountRemoved:
    return accounts.remove_tenant(_catalog(request, who), name, who=who)


# ------------------------------------------------------------------ roles


class NewRole(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    permissions: list[str]
    description: str = ""


@router.get("/roles", openapi_extra=ADMIN, response_model=Page[RoleModel])
def list_roles(request: Request, q: ListQuery = Depends(list_query),
               who: Principal = Depends(principal)) -> Page[RoleModel]:
    roles = accounts.list_roles(_catalog(request, who))
    return paginate(roles, q, sorts={"name": lambda r: r.name}, default="name",
                    ident=lambda r: r.name)


@router.post("/roles", openapi_extra=ADMIN, response_model=RoleModel, status_code=201)
def add_role(body: NewRole, request: Request,
             who: Principal = Depends(principal)) -> RoleModel:
    return accounts.add_role(_catalog(request, who), body.name, body.permissions,
                             description=body.description, who=who)


@router.get("/roles/{name}", openapi_extra=ADMIN, response_model=RoleModel)
def show_role(name: str, request: Request, who: Principal = Depends(principal)) -> RoleModel:
    return accounts.show_role(_catalog(request, who), name)


@router.delete("/roles/{name}", openapi_extra=ADMIN, response_model=AccountRemoved)
def remove_role(name: str, request: Request,
                who: Principal = Depends(principal)) -> AccountRemoved:
    return accounts.remove_role(_catalog(request, who), name, who=who)
