"""Restores: a disk to an image or device, a VM as new or in place, a group's VMs.

Each runs as a job of kind restore; its result names, per VM, the point and what
was written where.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from stasis.app.backup import RepoOpener, Where
from stasis.app.jobs import Warn
from stasis.app.kinds import (
    KINDS,
    RestoreDiskParams,
    RestoreGroupParams,
    RestoreVmParams,
    env_here,
    run_here,
)
from stasis.app.models import DiskRestore, GroupRestore, VmRestore
from stasis.errors import UsageError
from stasis.progress import Progress


def restore_disk(open_repo: RepoOpener, point: str, *, to: Path | None, catalog: str | None,
                 warn: Warn, vm: str | None = None, disk: str | None = None,
                 fmt: str | None = None, force: bool = False,
                 progress: Progress | None = None, where: Where | None = None,
                 pool: str | None = None, connect: str | None = None) -> DiskRestore:
    """Write one disk of ``point`` to an image file or a block device, or to a new
    volume of the libvirt ``pool`` (named ``to``, or a default name)."""
    params = RestoreDiskParams(point=point, to=to, vm=vm, disk=disk, format=fmt, force=force,
                               pool=pool)
    KINDS[params.op].check(params)
    env = env_here(catalog=catalog, warn=warn, open_repo=open_repo, where=where,
                   progress=progress, connect=connect)
    return cast(DiskRestore, run_here(params, env))


def restore_vm(connect: str, open_repo: RepoOpener, point: str, *, catalog: str | None,
               warn: Warn, vm: str | None = None, name: str | None = None,
               storage: Path | None = None, network: str | None = None, start: bool = False,
               in_place: bool = False, progress: Progress | None = None,
               where: Where | None = None, pool: str | None = None) -> VmRestore:
    """Restore a whole VM of ``point``, as a new VM (its disks in ``storage`` or as
    volumes of the libvirt ``pool``) or in place (it must be shut off)."""
    params = RestoreVmParams(point=point, vm=vm, name=name, storage=storage, network=network,
                             start=start, in_place=in_place, pool=pool)
    KINDS[params.op].check(params)
    env = env_here(catalog=catalog, warn=warn, open_repo=open_repo, connect=connect,
                   where=where, progress=progress)
    return cast(VmRestore, run_here(params, env))


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
                  where: Where | None = None, pool: str | None = None) -> GroupRestore:
    """Restore every VM of ``point`` as new VMs (NAME+SUFFIX), all or nothing."""
    params = RestoreGroupParams(point=point, suffix=suffix, storage=storage, network=network,
                                start=start, order=order, pool=pool)
    KINDS[params.op].check(params)
    env = env_here(catalog=catalog, warn=warn, open_repo=open_repo, connect=connect,
                   where=where, progress=progress)
    return cast(GroupRestore, run_here(params, env))
