"""The VM inventory: every libvirt VM with its disks, labels, protection and newest
point."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Mapping

import libvirt

from stasis.app.models import PointRef, VmDisk, VmRow
from stasis.app.points import KnownPoint, known_points
from stasis.hypervisor import labels as lb
from stasis.hypervisor import libvirt_api as lv
from stasis.hypervisor.domain import parse
from stasis.hypervisor.pools import resolve_volumes
from stasis.repository import Repository


def list_vms(conn: libvirt.virConnect, repo: Repository | None = None, *,
             only: Callable[[libvirt.virDomain], bool] | None = None) -> list[VmRow]:
    """Every VM of ``conn`` by name (those ``only`` keeps); with ``repo``, whether it is
    protected there (a point of it, or a checkpoint chain of the repository) and its
    newest point."""
    latest: dict[str, KnownPoint] = {}
    if repo is not None:
        for p in known_points(repo):  # each manifest decoded once, not per listing
            for vm, kind in p.vm_kinds:
                if kind == "vm":
                    latest[vm] = p
    rows = []
    for dom in sorted(conn.listAllDomains(), key=lambda d: d.name()):
        try:
            if only is not None and not only(dom):
                continue
            rows.append(_row(dom, repo, latest.get(dom.name())))
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            # undefined between the listing and its questions: it is not a VM now
    return rows


def _row(dom: libvirt.virDomain, repo: Repository | None, point: KnownPoint | None
         ) -> VmRow:
    running = dom.isActive()
    info = resolve_volumes(dom.connect(), parse(lv.domain_xml(dom, inactive=not running)),
                           strict=False)
    disks = []
    for d in info.disks:
        size = alloc = None
        with contextlib.suppress(libvirt.libvirtError):  # shown without sizes, not fatal
            size, alloc = lv.block_info(dom, d.target)
        disks.append(VmDisk(target=d.target, format=d.format, source=d.source,
                            virtual_size=size, allocated=alloc, bitmaps=d.bitmaps))
    chain = lv.checkpoints(dom, lv.chain_prefix(repo.id)) if repo is not None else []
    return VmRow(
        name=dom.name(), uuid=info.uuid, state=lv.domain_state(dom), disks=disks,
        protected=(point is not None or bool(chain)) if repo is not None else None,
        checkpoint=chain[-1].name if chain else None,
        newest_point=PointRef(id=point.id, time=point.time) if point else None,
        labels=lb.get_labels(dom),
    )


def find_vms(conn: libvirt.virConnect, repo: Repository | None = None, *,
             name: str | None = None, labels: Mapping[str, str] | None = None,
             state: str | None = None, protected: bool | None = None,
             owned: Callable[[str], bool] | None = None) -> list[VmRow]:
    """The VMs of :func:`list_vms` whose name matches the glob ``name``, that carry every
    one of ``labels``, are in ``state`` and (with ``repo``) are ``protected`` or not;
    with ``owned``, only those it says are owned."""

    def keep(dom: libvirt.virDomain) -> bool:
        vm = dom.name()
        if name is not None and not fnmatch.fnmatchcase(vm, name):
            return False
        if owned is not None and not owned(vm):
            return False
        if labels:
            have = lb.get_labels(dom)
            return all(have.get(k) == v for k, v in labels.items())
        return True

    rows = list_vms(conn, repo, only=keep)
    return [r for r in rows if (state is None or r.state == state)
            and (protected is None or r.protected == protected)]
