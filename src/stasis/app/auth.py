"""Who may do what: permissions, roles, tenants and the principal of a request.

Every operation of the REST API needs one permission (a route declares it, and the
API refuses a principal without it). A role is a named set of permissions; roles are
data (the catalog's ``roles`` table), and the built-in ones below are written there
whenever a catalog is opened by the server. A user is bound to one role over the
whole system or over one tenant; a token acts for its user with at most the user's
permissions (a narrower role, or a subset of permissions).

A tenant owns VMs, by explicit names or by a label selector, and through them their
points and jobs, plus the groups and policies it defines. A principal bound to a
tenant sees nothing else: the API answers 404 for another tenant's object, as if it
did not exist.

The CLI on the host runs as root and needs none of this: it is the host's own admin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# permission -> what it allows (shown in /api/v1/me and in each route's OpenAPI entry)
PERMISSIONS: dict[str, str] = {
    "vms:read": "list VMs with their disks, labels and protection",
    "vms:write": "set and remove VM labels",
    "groups:read": "list and show groups",
    "groups:write": "create, edit and delete groups",
    "policies:read": "list, show and export policies, their next runs and retention",
    "policies:write": "create, edit, import and delete policies",
    "points:read": "list and show recovery points (metadata only)",
    "points:hold": "hold and release points",
    "points:delete": "delete points",
    "backups:run": "start backups of VMs, groups and policies",
    "restores:run": "restore VMs and disks, start instant recovery, exports and clones",
    "files:read": "browse, find and download files from points (reads backup data)",
    "jobs:read": "list jobs and read their progress and logs",
    "jobs:cancel": "cancel running and queued jobs",
    "repositories:read": "show repositories, their size and copy lag",
    "repositories:maintain": "verify, prune, gc and copy repositories",
    "status:read": "read the protection status: newest points, RPO, next runs",
    "metrics:read": "read the Prometheus metrics",
    "audit:read": "read the audit log",
    "tokens:own": "create, list and revoke one's own API tokens",
    "users:admin": "manage users, tokens of others, tenants, roles and policy templates",
}

_READ = {"vms:read", "groups:read", "policies:read", "points:read", "jobs:read",
         "repositories:read", "status:read"}

# role -> (description, permissions): the built-in roles
BUILTIN_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    "admin": ("everything", frozenset(PERMISSIONS)),
    "operator": ("everything but users, tenants and roles",
                 frozenset(PERMISSIONS) - {"users:admin"}),
    "backup": ("start backups and see their results",
               frozenset(_READ | {"backups:run", "jobs:cancel", "tokens:own"})),
    "restore": ("restore, browse files, instant recovery and clones within its scope, "
                "and cancel the jobs it sees",
                frozenset(_READ | {"restores:run", "files:read", "jobs:cancel",
                                   "tokens:own"})),
    "auditor": ("sees metadata, logs and the audit log; reads no backup data",
                frozenset(_READ | {"metrics:read", "audit:read", "tokens:own"})),
    "viewer": ("sees metadata", frozenset(_READ | {"tokens:own"})),
}

# A route that needs no principal at all (sign-in, the OpenAPI document, health).
PUBLIC = "public"
# A route that needs a signed-in principal but no permission beyond it (/api/v1/me).
AUTHENTICATED = "authenticated"


@dataclass(frozen=True)
class Tenant:
    """An owner of VMs and of what it defines, and where its users may restore to."""

    name: str
    vms: frozenset[str] = frozenset()  # VM names it owns
    labels: Mapping[str, str] = field(default_factory=dict)  # and VMs carrying all of these
    restore_pools: tuple[str, ...] = ()
    restore_networks: tuple[str, ...] = ()
    restore_dirs: tuple[str, ...] = ()

    def owns(self, vm: str, labels: Mapping[str, str] | None = None) -> bool:
        """Whether the VM named ``vm``, carrying ``labels``, is this tenant's. An empty
        selector selects nothing (a tenant with no names and no labels owns no VM)."""
        if vm in self.vms:
            return True
        if not self.labels or labels is None:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a user, through a token or a browser session, with the
    permissions they carry and the tenant they are bound to (None: the whole system)."""

    user: str
    role: str
    permissions: frozenset[str]
    tenant: Tenant | None = None
    token: int | None = None  # the token's id, when authenticated by a token
    session: int | None = None  # the session's id, when authenticated by a cookie
    csrf: str | None = None  # the session's CSRF token (unsafe methods must send it)
    address: str | None = None  # the client's address

    def can(self, permission: str) -> bool:
        if permission in (PUBLIC, AUTHENTICATED):
            return True
        return permission in self.permissions

    @property
    def system(self) -> bool:
        """Bound to the whole system rather than to one tenant."""
        return self.tenant is None

    @property
    def shown(self) -> str:
        """How the principal is named in messages and the audit log."""
        return f"{self.user} (token {self.token})" if self.token is not None else self.user
