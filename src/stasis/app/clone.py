"""Clones: a new VM from a point, or from a VM's present state taken as a point first;
linked clones listed and deleted.

Recovery makes clones of points (:mod:`stasis.recovery.clone`) and protection takes
points (:func:`stasis.protection.vm.back_up_vm`); neither imports the other, so a
clone of a VM is put together here: every refusal first, then the point of the VM
(into the same repository), then the clone of that point.
"""

from __future__ import annotations

import time
from pathlib import Path

from stasis.app.instant import ExportOpener
from stasis.app.models import CloneDeleted, CloneModel, CloneRow
from stasis.errors import UsageError
from stasis.hypervisor import libvirt_api as lv
from stasis.progress import Progress
from stasis.protection.vm import back_up_vm
from stasis.recovery import clone as clone_mod
from stasis.recovery.clone import check_clone, clone_point
from stasis.recovery.vm import DEFAULT_STORAGE
from stasis.repository import Credentials, Repository
from stasis.settings import run_dir, scratch_dir


def clone(
    connect: str, open_repo: ExportOpener, source: str, *,
    name: str, vm: str | None = None, linked: bool = False, storage: Path | None = None,
    network: str | None = None, start: bool = False, from_vm: bool = False,
    progress: Progress | None = None, pool: str | None = None,
) -> CloneModel:
    """Make the VM ``name`` from ``source`` (a point spec or a VM name, see
    :func:`stasis.recovery.clone.resolve_source`), its disks in ``storage`` or (a full
    clone) as volumes of the libvirt ``pool``."""
    if pool is not None and storage is not None:
        raise UsageError("--pool and --storage are two places for the disks: give one; "
                         "nothing was made")
    conn = lv.connect(connect)
    repo, creds = open_repo()
    began = time.time()
    storage = (storage or DEFAULT_STORAGE).absolute()
    # Every refusal comes before a point is taken or a byte is written.
    found = check_clone(conn, repo, source, name=name, vm=vm, storage=storage,
                        network=network, from_vm=from_vm, pool=pool, linked=linked)
    taken = isinstance(found, str)
    runs, scratch = run_dir(), scratch_dir()
    if isinstance(found, str):
        point = back_up_vm(conn, repo, found, run_dir=runs, scratch_dir=scratch,
                           progress=progress)
        vm = found
    else:
        point = found
    result = clone_point(conn, repo, creds, point, name=name, vm=vm, linked=linked,
                         storage=None if pool else storage, network=network, start=start,
                         run_dir=runs, progress=progress, pool=pool)
    result.source = "vm" if taken else "point"
    result.point_taken = taken
    result.duration_s = round(time.time() - began, 3)
    return CloneModel.model_validate(result.to_dict())


def refuse_full_clone(connect: str, repo: Repository, point: str, *, name: str,
                      vm: str | None = None, storage: Path | None = None,
                      network: str | None = None, pool: str | None = None) -> None:
    """What a full clone of ``point`` would refuse, refused now, before a job is queued:
    the new VM's name, storage (or pool) and network, the point's VM."""
    from stasis.recovery.clone import check_pool
    from stasis.recovery.instant import check_new_vm
    from stasis.recovery.vm import select_vm

    conn = lv.connect(connect)
    check_pool(conn, pool, linked=False)
    check_new_vm(conn, name, (storage or DEFAULT_STORAGE).absolute(), network)
    select_vm(repo.resolve(point), vm)


def list_clones(connect: str) -> list[CloneRow]:
    """Linked clones, with their point and export."""
    return [CloneRow.model_validate(row) for row in clone_mod.listing(lv.connect(connect))]


def delete_clone(connect: str, name: str, creds: Credentials) -> CloneDeleted:
    """Stop and undefine the linked clone ``name``, stop its export, remove its overlays;
    its point's hold is released with the point's last clone (``creds`` open the
    point's repository)."""
    conn = lv.connect(connect)
    return CloneDeleted.model_validate(clone_mod.delete(conn, name, creds).to_dict())
