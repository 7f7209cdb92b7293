"""What a principal may see and act on: everything, or one tenant's objects.

A tenant owns the VMs it names and the VMs whose labels match its selector; through
them it owns the points and jobs whose VMs are all its own, and it owns the groups
and policies it defined (their ``tenant`` column). Everything else does not exist for
it: the ``check_*`` methods raise the same not-found error a missing object raises,
so that an id of another tenant's object tells nothing (the API answers 404).

A :class:`Scope` lives for one request: VM labels are read from libvirt once, when
first needed. A VM that is no longer defined keeps only its explicit ownership (its
labels are gone with it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from stasis.app.auth import Principal, Tenant
from stasis.errors import JobNotFound, PointNotFound, PolicyNotFound, VmNotFound

if TYPE_CHECKING:
    import libvirt


class Scope:
    """The objects ``principal`` may see; ``labels_of(vm)`` gives a VM's labels, or None
    when the VM is not defined."""

    def __init__(self, principal: Principal,
                 labels_of: Callable[[str], dict[str, str] | None]) -> None:
        self.principal = principal
        self._labels_of = labels_of
        self._owned: dict[str, bool] = {}

    @classmethod
    def of(cls, principal: Principal,
           connect: str | Callable[[], libvirt.virConnect]) -> Scope:
        """The scope of ``principal`` over the VMs of the libvirt at ``connect`` (a URI,
        or what gives an open connection), connected only when a label is needed."""
        conn = None

        def labels_of(vm: str) -> dict[str, str] | None:
            nonlocal conn
            import libvirt

            from stasis.hypervisor import labels as lb
            from stasis.hypervisor import libvirt_api as lv

            if conn is None:
                conn = lv.connect(connect) if isinstance(connect, str) else connect()
            try:
                return lb.get_labels(conn.lookupByName(vm))
            except libvirt.libvirtError:
                return None

        return cls(principal, labels_of)

    @property
    def tenant(self) -> Tenant | None:
        return self.principal.tenant

    @property
    def everything(self) -> bool:
        """The principal is bound to the whole system: nothing is hidden from it."""
        return self.principal.tenant is None

    # ------------------------------------------------------------ VMs

    def owns_vm(self, vm: str) -> bool:
        t = self.principal.tenant
        if t is None:
            return True
        if vm not in self._owned:
            self._owned[vm] = vm in t.vms or (bool(t.labels)
                                              and t.owns(vm, self._labels_of(vm)))
        return self._owned[vm]

    def owns_vms(self, vms: Iterable[str]) -> bool:
        """Whether every one of ``vms`` is owned (an object of no VM — a prune, a gc,
        a point of images — belongs to the system alone)."""
        names = list(vms)
        if self.everything:
            return True
        return bool(names) and all(self.owns_vm(v) for v in names)

    def check_vm(self, vm: str, where: str) -> None:
        """Raise VmNotFound, exactly as for a VM that does not exist, unless owned."""
        if not self.owns_vm(vm):
            raise VmNotFound(vm, where)

    # ------------------------------------------------------------ what tenants define

    def owns_defined(self, tenant: str | None) -> bool:
        """Whether a group or policy owned by ``tenant`` (None: the system's) is seen."""
        if self.everything:
            return True
        t = self.principal.tenant
        return t is not None and tenant == t.name

    def check_policy(self, name: str, tenant: str | None) -> None:
        if not self.owns_defined(tenant):
            raise PolicyNotFound(f"No policy named {name!r}.")

    # ------------------------------------------------------------ points and jobs

    def check_point(self, ref: str, vms: Iterable[str]) -> None:
        if not self.owns_vms(vms):
            raise PointNotFound(ref)

    def owns_job(self, tenant: str | None, vms: Iterable[str]) -> bool:
        """A job is a tenant's when the tenant started it, or when all its VMs are the
        tenant's."""
        if self.everything:
            return True
        t = self.principal.tenant
        return (t is not None and tenant == t.name) or self.owns_vms(vms)

    def check_job(self, job_id: int, tenant: str | None, vms: Iterable[str]) -> None:
        if not self.owns_job(tenant, vms):
            raise JobNotFound(job_id)
