"""``clone``: a new VM from a point, or from a VM's present state taken as a point first.

Recovery makes clones of points (:mod:`stasis.recovery.clone`) and protection takes
points (:func:`stasis.protection.vm.back_up_vm`); neither imports the other, so a
clone of a VM is put together here: every refusal first, then the point of the VM
(into the same repository), then the clone of that point.
"""

from __future__ import annotations

import time
from pathlib import Path

import libvirt

from stasis.progress import Progress
from stasis.protection.vm import back_up_vm
from stasis.recovery.clone import CloneResult, check_clone, clone_point
from stasis.recovery.vm import DEFAULT_STORAGE
from stasis.repository import Credentials, Repository


def clone(
    conn: libvirt.virConnect, repo: Repository, creds: Credentials, source: str, *,
    name: str, vm: str | None = None, linked: bool = False, storage: Path | None = None,
    network: str | None = None, start: bool = False, from_vm: bool = False,
    run_dir: Path, scratch_dir: Path, progress: Progress | None = None,
) -> CloneResult:
    """Make the VM ``name`` from ``source`` (a point spec or a VM name, see
    :func:`stasis.recovery.clone.resolve_source`)."""
    began = time.time()
    storage = (storage or DEFAULT_STORAGE).absolute()
    # Every refusal comes before a point is taken or a byte is written.
    found = check_clone(conn, repo, source, name=name, vm=vm, storage=storage,
                        network=network, from_vm=from_vm)
    taken = isinstance(found, str)
    if isinstance(found, str):
        point = back_up_vm(conn, repo, found, run_dir=run_dir, scratch_dir=scratch_dir,
                           progress=progress)
        vm = found
    else:
        point = found
    result = clone_point(conn, repo, creds, point, name=name, vm=vm, linked=linked,
                         storage=storage, network=network, start=start, run_dir=run_dir,
                         progress=progress)
    result.source = "vm" if taken else "point"
    result.point_taken = taken
    result.duration_s = round(time.time() - began, 3)
    return result
