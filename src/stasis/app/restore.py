"""Restores: a disk to an image or device, a VM as new or in place, a group's VMs.

Each runs as a job of kind restore; its result names, per VM, the point and what
was written where.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stasis.app.backup import RepoOpener, Where
from stasis.app.jobs import Warn, foreground_job
from stasis.app.models import DiskRestore, GroupRestore, VmRestore
from stasis.errors import UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.progress import Progress
from stasis.recovery.group import restore_group as run_group_restore
from stasis.recovery.restore import restore_disk as run_disk_restore
from stasis.recovery.vm import VmRestoreResult
from stasis.recovery.vm import restore_vm as run_vm_restore
from stasis.repository import Manifest

if TYPE_CHECKING:
    from stasis.service.jobs import JobRun


def _record_vm(job: JobRun, m: Manifest, v: VmRestoreResult) -> None:
    """A restored VM in its restore job's result."""
    written = sum(d.bytes_written for d in v.disks)
    job.result[v.vm] = {"point": m.id, "point_name": m.name, "restored_as": v.name,
                        "in_place": v.in_place, "started": v.started,
                        "disks": {d.disk: d.target for d in v.disks},
                        "bytes_written": written, "error": None}
    job.bytes_written += written


def restore_disk(open_repo: RepoOpener, point: str, *, to: Path, catalog: str | None,
                 warn: Warn, vm: str | None = None, disk: str | None = None,
                 fmt: str | None = None, force: bool = False,
                 progress: Progress | None = None, where: Where | None = None) -> DiskRestore:
    """Write one disk of ``point`` to an image file or a block device."""
    r = open_repo()
    m = r.resolve(point)
    where = where or Where.default()
    vms = [vm] if vm else [v.name for v in m.vms][:1] if len(m.vms) == 1 else []
    with foreground_job(catalog, "restore", m.name, warn=warn, vms=vms, repo=r.id,
                        params={"point": m.id, "target": str(to), "disk": disk,
                                "format": fmt}) as job:
        result = run_disk_restore(r, m, target=to, vm=vm, disk=disk, fmt=fmt, force=force,
                                  progress=progress, run_dir=where.run)
        job.set_vms([result.vm])
        job.result[result.vm] = {
            "point": m.id, "point_name": m.name, "disks": {result.disk: result.target},
            "format": result.format, "bytes_written": result.bytes_written, "error": None}
        job.bytes_written = result.bytes_written
    return DiskRestore.model_validate(result.to_dict())


def restore_vm(connect: str, open_repo: RepoOpener, point: str, *, catalog: str | None,
               warn: Warn, vm: str | None = None, name: str | None = None,
               storage: Path | None = None, network: str | None = None, start: bool = False,
               in_place: bool = False, progress: Progress | None = None,
               where: Where | None = None) -> VmRestore:
    """Restore a whole VM of ``point``, as a new VM or in place (it must be shut off)."""
    conn = lv.connect(connect)
    r = open_repo()
    m = r.resolve(point)
    where = where or Where.default()
    vms = [vm] if vm else [v.name for v in m.vms if v.kind == "vm"][:1]
    with foreground_job(catalog, "restore", m.name, warn=warn, vms=vms, repo=r.id,
                        params={"point": m.id, "name": name, "in_place": in_place,
                                "start": start}) as job:
        result = run_vm_restore(conn, r, m, vm=vm, name=name, storage=storage,
                                network=network, start=start, in_place=in_place,
                                progress=progress, run_dir=where.run)
        job.set_vms([result.vm])
        _record_vm(job, m, result)
    return VmRestore.model_validate(result.to_dict())


def parse_order(order: str | None) -> list[str] | None:
    """``--order A,B``: the VMs to start first, in order (None: the point's order)."""
    names = [n.strip() for n in order.split(",") if n.strip()] if order is not None else None
    if order is not None and not names:
        raise UsageError("--order is empty; name the VMs of the point, e.g. --order db,app")
    return names


def restore_group(connect: str, open_repo: RepoOpener, point: str, *, catalog: str | None,
                  warn: Warn, suffix: str, storage: Path | None = None,
                  network: str | None = None, start: bool = False,
                  order: list[str] | None = None, progress: Progress | None = None,
                  where: Where | None = None) -> GroupRestore:
    """Restore every VM of ``point`` as new VMs (NAME+SUFFIX), all or nothing."""
    conn = lv.connect(connect)
    r = open_repo()
    m = r.resolve(point)
    where = where or Where.default()
    with foreground_job(catalog, "restore", m.name, warn=warn,
                        vms=[v.name for v in m.vms if v.kind == "vm"], repo=r.id,
                        params={"point": m.id, "suffix": suffix, "start": start,
                                "network": network}) as job:
        result = run_group_restore(conn, r, m, suffix=suffix, storage=storage,
                                   network=network, start=start, order=order,
                                   progress=progress, run_dir=where.run)
        for v in result.vms:
            _record_vm(job, m, v)
    return GroupRestore.model_validate(result.to_dict())
