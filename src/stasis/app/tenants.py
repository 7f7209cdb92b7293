"""What a tenant owns when no request is there to ask: at a job's run, and after it.

A tenant's stored group or policy is checked when it is written (it may only select
the tenant's VMs), but what it selects is resolved again at every run, and VMs,
labels and the tenant's own names change in between. So a run of a tenant's group or
policy acts only on the VMs the tenant owns at that moment (:func:`owner_scope`):
an explicit member it no longer owns is, for the run, a VM that does not exist, and
a VM its selectors pick up that is not the tenant's is left out.

A VM a tenant's job restores as new is the tenant's afterwards: its name is added to
the tenant's explicit names (:func:`claim_vm`), whatever labels it carries.

The labels that make a VM a tenant's (the keys of any tenant's label selector) are
changed by system-wide principals only (:func:`check_label_change`): a tenant can
neither give its VM away nor take one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from stasis.app.auth import Principal, Tenant
from stasis.app.scope import Scope
from stasis.errors import PermissionDenied

if TYPE_CHECKING:
    import libvirt

    from stasis.catalog import Catalog


def _record(catalog: Catalog, name: str) -> Tenant:
    """Tenant ``name`` as the rules see it; a tenant since removed owns nothing."""
    from stasis.app.accounts import tenant_of
    from stasis.catalog.accounts import AccountStore

    found = AccountStore(catalog).tenant(name)
    return Tenant(name=name) if found is None else tenant_of(found)


def owner_scope(catalog: Catalog, tenant: str | None,
                conn: libvirt.virConnect) -> Scope | None:
    """What tenant ``tenant`` owns now on ``conn`` (None: the system's, which owns all)."""
    if tenant is None:
        return None
    import libvirt

    from stasis.hypervisor import labels as lb

    def labels_of(vm: str) -> dict[str, str] | None:
        try:
            return lb.get_labels(conn.lookupByName(vm))
        except libvirt.libvirtError:
            return None

    owner = Principal(user=f"tenant {tenant}", role="owner", permissions=frozenset(),
                      tenant=_record(catalog, tenant))
    return Scope(owner, labels_of)


def claim_vm(catalog: Catalog, tenant: str, vm: str) -> None:
    """Make ``vm`` (just defined by a job of ``tenant``) the tenant's, by name."""
    from dataclasses import replace

    from stasis.catalog.accounts import AccountStore

    store = AccountStore(catalog)
    found = store.tenant(tenant)
    if found is None or vm in found.vms:
        return
    store.update_tenant(replace(found, vms=(*found.vms, vm)))


def ownership_keys(catalog: Catalog) -> set[str]:
    """The label keys that decide which tenant owns a VM (those of every selector)."""
    from stasis.catalog.accounts import AccountStore

    return {k for t in AccountStore(catalog).tenants() for k in t.labels}


def check_label_change(catalog: Catalog, who: Principal, vm: str,
                       before: Mapping[str, str], after: Mapping[str, str]) -> None:
    """Refuse (403) a tenant's principal a label change of ``vm`` that sets, changes or
    removes a label deciding ownership; a system-wide principal may make any."""
    if who.tenant is None:
        return
    keys = ownership_keys(catalog) | set(who.tenant.labels)
    touched = sorted(k for k in keys if before.get(k) != after.get(k))
    if touched:
        raise PermissionDenied("vms:write", f"{who.shown}, bound to tenant "
                               f"'{who.tenant.name}' (the label(s) "
                               f"{', '.join(map(repr, touched))} of VM '{vm}' decide which "
                               "tenant owns it: only a system-wide admin changes them)")
