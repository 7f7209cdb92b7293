"""Stored groups and VM labels: create, change, delete, list, show.

Groups live in the catalog; labels in each domain's libvirt metadata. Every change
is checked whole before anything is written: a refused part changes nothing. What a
group resolves to now is shown when libvirt answers, and left out (None) when not.

With a :class:`~stasis.app.scope.Scope` (the REST API's principal), a tenant sees and
changes only the groups it defined, and its groups select only VMs it owns: explicit
members of its own, and selectors only when they require the tenant's own labels (so
that whatever they select at a run is the tenant's). The CLI passes no scope: root
on the host sees every group.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import libvirt

from stasis.app.catalogs import using
from stasis.app.models import GroupDeleted, GroupModel, Resolved, VmLabels
from stasis.app.scope import Scope
from stasis.errors import GroupError, GroupNotFound, HypervisorError, UsageError
from stasis.hypervisor import labels as lb
from stasis.hypervisor import libvirt_api as lv
from stasis.protection.consistency import (
    DEFAULT_HOOK_TIMEOUT_S,
    GuestCommand,
    Hooks,
    parse_guest_command,
)
from stasis.protection.groups import Group, Resolution, check_level, check_name, resolve

if TYPE_CHECKING:
    from stasis.catalog import Catalog, GroupStore, StoredGroup


@contextmanager
def group_store(catalog: str | Catalog | None) -> Iterator[GroupStore]:
    from stasis.catalog import GroupStore

    with using(catalog) as c:
        yield GroupStore(c)


def _not_found(name: str, store: GroupStore) -> GroupNotFound:
    """The error of a missing group (word for word the catalog's own)."""
    return GroupNotFound(f"no group named '{name}' in the catalog {store.catalog.shown}. "
                         "Nothing was changed. 'stasis group list' shows the groups.")


def _must_see(store: GroupStore, name: str, scope: Scope | None) -> StoredGroup:
    """Group ``name``, unless missing or ``scope`` may not see it: then the error of a
    missing group."""
    stored = store.get(name)
    if stored is None or (scope is not None and not scope.owns_defined(stored.tenant)):
        raise _not_found(name, store)
    return stored


def check_tenant_group(scope: Scope | None, group: Group) -> None:
    """Refuse a group of a tenant's that could select VMs the tenant does not own: an
    explicit member not its own (a VM that does not exist is refused alike, so that the
    answer tells nothing of other tenants' VMs), a name glob, or a label selector that
    does not include every label of the tenant's own."""
    if scope is None or scope.everything or scope.tenant is None:
        return
    t = scope.tenant
    foreign = [vm for vm in group.members if not scope.owns_vm(vm)]
    if foreign:
        raise GroupError(f"group '{group.name}' names {', '.join(map(repr, foreign))}, not "
                         f"a VM of tenant '{t.name}': a tenant's group may only have its "
                         "own VMs as members. Nothing was changed.")
    if group.name_globs:
        raise GroupError(f"group '{group.name}' selects VMs by name ("
                         f"{', '.join(group.name_globs)}), which could select VMs not of "
                         f"tenant '{t.name}': a tenant's group names its VMs, or selects "
                         "them by labels that include its own. Nothing was changed.")
    if group.labels and (not t.labels or any(group.labels.get(k) != v
                                             for k, v in t.labels.items())):
        need = " ".join(f"{k}={v}" for k, v in sorted(t.labels.items()))
        raise GroupError(f"group '{group.name}' selects by labels that could select VMs "
                         f"not of tenant '{t.name}': a tenant's label selector must include "
                         f"its labels ({need or 'it has none: name the VMs'}). Nothing was "
                         "changed.")


def try_connect(uri: str) -> libvirt.virConnect | None:
    try:
        return lv.connect(uri)
    except HypervisorError:
        return None


def resolve_now(conn: libvirt.virConnect | None, group: Group) -> Resolution | None:
    """The members ``group`` resolves to now, or None when libvirt does not answer."""
    if conn is None:
        return None
    try:
        return resolve(conn, group)
    except (HypervisorError, libvirt.libvirtError):
        return None


def group_model(stored: StoredGroup, now: Resolution | None,
                scope: Scope | None = None) -> GroupModel:
    if now is not None and scope is not None and not scope.everything:
        # what the group would select of others' VMs is never shown to a tenant
        now = Resolution(members=[v for v in now.members if scope.owns_vm(v)],
                         missing=[v for v in now.missing if scope.owns_vm(v)],
                         selected=[v for v in now.selected if scope.owns_vm(v)])
    return GroupModel(
        **stored.to_dict(),
        resolved=None if now is None else Resolved(members=now.members, missing=now.missing,
                                                   selected=now.selected))


def _dedupe(values: list[str] | None) -> list[str]:
    return list(dict.fromkeys(values or []))


def _guest(values: list[str] | None) -> list[GuestCommand]:
    return [parse_guest_command(v) for v in values or []]


def create_group(catalog: str | Catalog | None, name: str, *, connect: str,
                 vms: list[str] | None = None, select: list[str] | None = None,
                 labels: list[str] | None = None, consistency: str = "crash",
                 require: str | None = None, pre_host: list[str] | None = None,
                 post_host: list[str] | None = None, pre_guest: list[str] | None = None,
                 post_guest: list[str] | None = None, hook_timeout: float | None = None,
                 description: str | None = None, scope: Scope | None = None) -> GroupModel:
    """Store a group: explicit members, selectors (``labels`` as KEY=VALUE), level, hooks
    (a group of ``scope``'s tenant when it has one)."""
    check_name(name)
    group = Group(
        name=name, members=_dedupe(vms), name_globs=_dedupe(select),
        labels=lb.parse_labels(labels or []), consistency=check_level(consistency),
        require=check_level(require, "--require") if require else None,
        hooks=Hooks(pre_host=list(pre_host or []), post_host=list(post_host or []),
                    pre_guest=_guest(pre_guest), post_guest=_guest(post_guest),
                    timeout_s=DEFAULT_HOOK_TIMEOUT_S if hook_timeout is None else hook_timeout),
        description=description or "",
    )
    if not group.members and not group.has_selectors:
        raise UsageError(f"group '{name}' would have no members: give --vm, --select or "
                         "--label. Nothing was changed.")
    check_tenant_group(scope, group)
    tenant = scope.tenant.name if scope is not None and scope.tenant is not None else None
    with group_store(catalog) as store:
        if tenant is not None and store.get(name) is not None:
            # names are shared by every tenant: the answer is the same whoever holds
            # the name, and tells nothing more of its group
            raise GroupError(f"a group named '{name}' exists already (group names are "
                             "shared by every tenant: choose another). Nothing was changed.")
        stored = store.create(group, tenant=tenant)
    return group_model(stored, resolve_now(try_connect(connect), stored.group), scope)


@dataclass
class GroupChange:
    """What ``edit_group`` changes; None (or empty) leaves a part as it is."""

    add_vms: list[str] = field(default_factory=list)
    remove_vms: list[str] = field(default_factory=list)
    add_select: list[str] = field(default_factory=list)
    remove_select: list[str] = field(default_factory=list)
    add_labels: list[str] = field(default_factory=list)  # KEY=VALUE
    remove_labels: list[str] = field(default_factory=list)  # KEY
    consistency: str | None = None
    require: str | None = None
    no_require: bool = False
    pre_host: list[str] = field(default_factory=list)
    post_host: list[str] = field(default_factory=list)
    pre_guest: list[str] = field(default_factory=list)  # VM:COMMAND
    post_guest: list[str] = field(default_factory=list)
    clear_hooks: bool = False
    hook_timeout: float | None = None
    description: str | None = None

    def is_empty(self) -> bool:
        lists = (self.add_vms, self.remove_vms, self.add_select, self.remove_select,
                 self.add_labels, self.remove_labels, self.pre_host, self.post_host,
                 self.pre_guest, self.post_guest)
        values = (self.consistency, self.require, self.hook_timeout, self.description)
        return (not any(lists) and all(v is None for v in values)
                and not self.clear_hooks and not self.no_require)


def edit_group(catalog: str | Catalog | None, name: str, change: GroupChange, *,
               connect: str, scope: Scope | None = None) -> GroupModel:
    """Change a stored group; everything asked is checked first, a refused part changes
    nothing."""
    if change.require is not None and change.no_require:
        raise UsageError("--require and --no-require contradict each other. Nothing was "
                         "changed.")
    new_labels = lb.parse_labels(change.add_labels)
    drop_labels = [lb.check_key(t.partition("=")[0]) for t in change.remove_labels]
    new_pre_guest, new_post_guest = _guest(change.pre_guest), _guest(change.post_guest)
    if change.consistency is not None:
        check_level(change.consistency)
    if change.require is not None:
        check_level(change.require, "--require")
    if change.is_empty():
        raise UsageError(f"nothing to change in group '{name}': give an option "
                         f"('stasis group edit --help' lists them).")

    def apply(g: Group) -> Group:
        for vm in change.remove_vms:
            if vm not in g.members:
                raise GroupError(f"'{vm}' is not a member of group '{name}' (members: "
                                 f"{', '.join(g.members) or 'none'}). Nothing was changed.")
            g.members.remove(vm)
        g.members += [vm for vm in _dedupe(change.add_vms) if vm not in g.members]
        for glob in change.remove_select:
            if glob not in g.name_globs:
                raise GroupError(f"'{glob}' is not a name glob of group '{name}' (globs: "
                                 f"{', '.join(g.name_globs) or 'none'}). Nothing was changed.")
            g.name_globs.remove(glob)
        g.name_globs += [s for s in _dedupe(change.add_select) if s not in g.name_globs]
        for key in drop_labels:
            if key not in g.labels:
                raise GroupError(f"group '{name}' selects on no label '{key}' (labels: "
                                 f"{', '.join(sorted(g.labels)) or 'none'}). Nothing was "
                                 "changed.")
            del g.labels[key]
        g.labels.update(new_labels)
        if change.consistency is not None:
            g.consistency = change.consistency
        if change.require is not None:
            g.require = change.require
        if change.no_require:
            g.require = None
        if change.clear_hooks:
            g.hooks = Hooks(timeout_s=g.hooks.timeout_s)
        g.hooks.pre_host += change.pre_host
        g.hooks.post_host += change.post_host
        g.hooks.pre_guest += new_pre_guest
        g.hooks.post_guest += new_post_guest
        if change.hook_timeout is not None:
            g.hooks.timeout_s = change.hook_timeout
        if change.description is not None:
            g.description = change.description
        if not g.members and not g.has_selectors:
            raise UsageError(f"group '{name}' would be left with no members and no "
                             "selectors. Nothing was changed; delete it with "
                             f"'stasis group delete {name}' instead.")
        check_tenant_group(scope, g)
        return g

    with group_store(catalog) as store:
        _must_see(store, name, scope)
        stored = store.update(name, apply)
    return group_model(stored, resolve_now(try_connect(connect), stored.group), scope)



def delete_group(catalog: str | Catalog | None, name: str, *,
                 scope: Scope | None = None) -> GroupDeleted:
    """Delete a stored group (its points stay in the repository); return what it was."""
    with group_store(catalog) as store:
        if scope is not None:
            _must_see(store, name, scope)
        return GroupDeleted(**store.delete(name).to_dict(), resolved=None)


def list_groups(catalog: str | Catalog | None, *, connect: str,
                scope: Scope | None = None) -> list[GroupModel]:
    """Every stored group (that ``scope`` sees), with the members each resolves to now."""
    with group_store(catalog) as store:
        groups = [g for g in store.list() if scope is None or scope.owns_defined(g.tenant)]
    conn = try_connect(connect) if groups else None
    return [group_model(s, resolve_now(conn, s.group), scope) for s in groups]


def show_group(catalog: str | Catalog | None, name: str, *, connect: str,
               scope: Scope | None = None) -> GroupModel:
    with group_store(catalog) as store:
        stored = _must_see(store, name, scope)
    return group_model(stored, resolve_now(try_connect(connect), stored.group), scope)


def vm_labels(connect: str, vm: str, *, assignments: list[str] | None = None,
              remove: list[str] | None = None) -> VmLabels:
    """Set (KEY=VALUE) and remove (KEY) labels of ``vm``; return its labels after."""
    wanted = lb.parse_labels(assignments or [])
    drop = [lb.check_key(k) for k in remove or []]
    dom = lv.lookup(lv.connect(connect), vm)
    labels = lb.update_labels(dom, wanted, drop) if wanted or drop else lb.get_labels(dom)
    return VmLabels(vm=vm, labels=labels)
